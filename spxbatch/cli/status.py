"""`spxbatch status RUN_DIR`: which stages of a run are done, what failed and the command that finishes it."""

from __future__ import annotations

import argparse

from spxbatch.cli.exit_codes import EXIT_OK


def status_main(argv: list[str]) -> int:
    """Print which stages of a run are done, what failed and the command that finishes it."""
    p = argparse.ArgumentParser(prog="spxbatch status", description=status_main.__doc__)
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    from spxbatch.errors import ConfigError
    from spxbatch.pipeline.rundir import RunDir
    from spxbatch.pipeline.status import run_status

    if RunDir(args.run_dir).read_config() is None:
        raise ConfigError(f"{args.run_dir} is not a spxbatch run directory (no config.json); give the run "
                          "directory beside a cube (CUBE.run)")
    print(run_status(args.run_dir))
    return EXIT_OK
