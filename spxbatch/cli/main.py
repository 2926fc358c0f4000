"""`spxbatch CATALOG [options]` and the subcommands demo, stage, status, plot, export, qc, sim and update.

Each subcommand is one module of this folder with a `*_main(argv)` that returns the exit code
(`exit_codes.py`). Here: the dispatch, SIGTERM treated as Ctrl-C (and Ctrl-C heeded even when inherited
ignored), and known errors as one sentence.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, exit_code
from spxbatch.cli.options import photometry_help

#: Subcommand -> 'module:function' in this folder (imported on use, so that `--help` starts quickly).
SUBCOMMANDS = {"demo": "demo:demo_main", "stage": "run:stage_main", "status": "status:status_main",
               "plot": "plot:plot_main", "export": "export:export_main", "qc": "qc:qc_main", "sim": "sim:sim_main",
               "update": "update:update_main"}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _dispatch(argv)
    # A batch system or `kill` ends a run with SIGTERM: treat it like Ctrl-C so that worker jobs are
    # cancelled and the run directory is left resumable. Ctrl-C (SIGINT) raises KeyboardInterrupt even when
    # the command started with SIGINT ignored, which Python would keep: a shell without job control starts
    # its background jobs so (a batch script's `spxbatch ... &`, a test suite run in the background), and the
    # run, its workers inheriting the same, would go on to the end. The caller's handlers are put back after.
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        return _dispatch(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _dispatch(argv: list[str]) -> int:
    """Run the main command or a subcommand; known errors become one sentence and an exit code."""
    if argv[:1] == ["--help-photometry"]:
        print(photometry_help())
        return EXIT_OK
    name = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module, function = SUBCOMMANDS.get(name, "run:run_main").split(":")
    try:
        command = getattr(importlib.import_module(f"spxbatch.cli.{module}"), function)
        return command(argv[1:] if name else argv)
    except KeyboardInterrupt:
        print("spxbatch: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        return _fail(exc)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: raise KeyboardInterrupt in the main thread."""
    raise KeyboardInterrupt


def _fail(exc: Exception) -> int:
    """One clear sentence for the known error kinds; the traceback only with SPXBATCH_DEBUG=1."""
    if os.environ.get("SPXBATCH_DEBUG"):
        raise exc
    code = exit_code(exc)
    if code is not None:
        print(f"spxbatch: {exc}", file=sys.stderr)
        return code
    print(f"spxbatch: unexpected error {type(exc).__name__}: {exc} (set SPXBATCH_DEBUG=1 for the traceback)",
          file=sys.stderr)
    return EXIT_INPUT if isinstance(exc, ValueError) else EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
