"""What the fault and bad-input matrices record for `docs/reliability.md`: one JSON line per case, appended to
the file the environment variable SPXBATCH_RELIABILITY_RECORD names (nothing is written without it).
`benchmarks/reliability_report.py` runs both matrices with it set and rewrites the doc's tables from the lines,
so the tables say what the tests last asserted and measured, not what someone remembered."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: The environment variable naming the JSON-lines file the cases are appended to.
RECORD_ENV = "SPXBATCH_RELIABILITY_RECORD"


class Recorder:
    """Records one test case's row: `recorder(**fields)` (JSON-serialisable values) under the test's id."""

    def __init__(self, case: str, module: str) -> None:
        self.case, self.module = case, module

    def __call__(self, **fields: Any) -> None:
        path = os.environ.get(RECORD_ENV)
        if not path:
            return
        with Path(path).open("a") as fh:
            fh.write(json.dumps({"module": self.module, "case": self.case, **fields}, default=int) + "\n")


def describe_faults(faults: dict[str, Any]) -> str:
    """A fault configuration in words: the rates in percent, then the settings and filters."""
    from spxbatch.sim.faults import FAULT_KINDS

    rates = [f"{k} {faults[k] * 100:g} %" for k in (*FAULT_KINDS, "job_error") if faults.get(k)]
    extra = [f"{k} {faults[k]}" for k in ("retry_after", "stall_s") if k in faults]
    where = [f"{k} `{faults[k]}`" for k in ("only", "extname") if faults.get(k)]
    if faults.get("include_tap"):
        where.append("TAP included")
    return ", ".join([*rates, *extra, *where])
