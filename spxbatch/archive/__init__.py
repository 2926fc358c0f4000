"""Talking to the archive: where it is, what it holds (TAP, footprints, the plan), and reading its files."""
