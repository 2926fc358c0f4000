"""The exceptions that cross stages: each names what is wrong in one sentence, and the CLI maps it to an exit code."""

from __future__ import annotations


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the file, column and rows and says what to do."""


class ConfigError(ValueError):
    """A configuration file or option that cannot be used; the message says which and why."""


class StageError(RuntimeError):
    """A stage was asked for before the stages it needs were done (or of a directory that is no run)."""


class WriteError(OSError):
    """A file of the run (its run directory, cache or output) could not be written for lack of room or
    permission to write there (no space left, a quota, a read-only filesystem): the run stops; every file
    spxbatch writes is whole or absent, so the same command resumes once there is room. An OSError still, so
    a best-effort writer (a cache) that shrugs off a full disk keeps doing so."""
