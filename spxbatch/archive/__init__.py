"""Where the archive is, retrying byte I/O to it, and a local mirror's layout and manifest."""
