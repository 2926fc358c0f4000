"""Errors of the archive layer that the command line reports as one sentence."""


class ArchiveUnreachable(RuntimeError):
    """The archive (TAP service or file server) cannot be reached at all; the message says what was tried."""
