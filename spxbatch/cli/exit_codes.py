"""The exit codes of every spxbatch command, as the README lists them, and which error ends in which."""

from __future__ import annotations

from spxbatch.archive.errors import ArchiveUnreachable
from spxbatch.errors import CatalogError, ConfigError, StageError, WriteError

#: 0 success; 1 the run finished but some images failed (recorded in the cube); 2 bad input (catalog, options,
#: config file); 3 a stage asked for before the stages it needs; 4 the archive cannot be reached; 6 a file of the
#: run could not be written (disk full, quota, read-only): finished work kept, rerun once there is room;
#: 130 interrupted.
EXIT_OK, EXIT_FAILURES, EXIT_INPUT, EXIT_STAGE, EXIT_ARCHIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_WRITE = 6
#: An error of no known kind (a bug, or a failure nothing anticipated): the message asks for the traceback.
EXIT_UNEXPECTED = 5

#: The same, for --help.
EXIT_CODES_HELP = ("Exit codes: 0 success; 1 the run finished but some images failed (recorded in the cube); "
                   "2 bad input (catalog, options, config file); 3 a stage asked for before the stages it needs; "
                   "4 the archive cannot be reached; 6 the run directory or output cannot be written (disk full): "
                   "make room and rerun the same command; 130 interrupted. Errors are one sentence on stderr, not a "
                   "traceback (SPXBATCH_DEBUG=1 shows it).")

#: Error kinds reported as one sentence, and their exit codes.
KNOWN_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (CatalogError, EXIT_INPUT), (ConfigError, EXIT_INPUT), (StageError, EXIT_STAGE),
    (ArchiveUnreachable, EXIT_ARCHIVE), (WriteError, EXIT_WRITE), (FileNotFoundError, EXIT_INPUT))


def exit_code(exc: Exception) -> int | None:
    """The exit code of a known error kind, None for an unexpected one."""
    return next((code for kind, code in KNOWN_ERRORS if isinstance(exc, kind)), None)
