"""Regenerate the tables of docs/reliability.md from the fault matrix and the bad-input matrix.

Run: python benchmarks/reliability_report.py [--doc docs/reliability.md]. It runs
tests/e2e/test_fault_matrix.py (slow cases included) and tests/cli/test_bad_inputs.py with
SPXBATCH_RELIABILITY_RECORD set, so that each case appends its row (tests/reliability_record.py: the fault,
how many faults the server injected, what the case asserts, the measurements lost), and, only when every case
passed, rewrites the doc's generated blocks (between `<!-- generated: NAME -->` and `<!-- end generated: NAME
-->`), leaving every other line as it was. A failing case leaves the doc untouched and exits 1. The rows come
in the order the cases ran (the test modules' order), so the tables change only when what the tests assert or
measure changes (injected counts can move by a few between runs: workers share their file caches
differently).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from reliability_record import RECORD_ENV  # noqa: E402  (the tests' recorder: one name for the record file)

MODULES = {"fault-matrix": "tests/e2e/test_fault_matrix.py", "bad-inputs": "tests/cli/test_bad_inputs.py"}


def run_matrices(record: Path) -> int:
    """Run both matrices (slow cases too) with the record file set; pytest's exit code."""
    env = {**os.environ, RECORD_ENV: str(record)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
           *MODULES.values()]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _lost(row: dict) -> str:
    """The 'measurements lost' cell: the loss at the end, and what was recorded before a resume."""
    if "recorded" not in row:
        return str(row["lost"])
    if row.get("resumed", True):
        return f"{row['recorded']} recorded as failure rows; {row['lost']} after the resume"
    return f"{row['lost']}, each a failure row"


def fault_table(rows: list[dict]) -> str:
    """The fault matrix: one row per case, then the totals."""
    lines = ["| Case | Fault | Injected | Asserts | Measurements lost |", "|---|---|---|---|---|"]
    lines += [f"| `{r['case'].removeprefix('test_')}` | {_cell(r['fault'])} | {r['injected']} | {_cell(r['asserts'])} "
              f"| {_lost(r)} |" for r in rows]
    injected = sum(int(r["injected"]) for r in rows)
    interrupted = sum(int(r.get("interrupted", 0)) for r in rows)
    lost = sum(int(r["lost"]) for r in rows)
    lost_for_good = sum(int(r["lost"]) for r in rows if r.get("resumed", True))
    lines += ["", f"{len(rows)} cases, {injected} faults injected, {interrupted} runs or workers killed; "
                  f"measurements lost at the end: {lost} ({lost_for_good} where the case resumes, the rest "
                  "recorded per pair as failure rows)."]
    return "\n".join(lines)


def _param(case: str) -> str:
    """The parameter id of a parametrized test's name ('test_x[flag-bad]' -> 'flag-bad')."""
    m = re.fullmatch(r".*\[(.*)\]", case)
    return m[1] if m else case


def bad_input_table(rows: list[dict]) -> str:
    """The bad-input matrix: one row per input, then the totals."""
    lines = ["| Input | Exit | The one sentence says |", "|---|---|---|"]
    lines += [f"| `{_param(r['case'])}` | {r['exit']} | {_cell(r['says'])} |" for r in rows]
    codes = ", ".join(str(c) for c in sorted({int(r["exit"]) for r in rows}))
    lines += ["", f"{len(rows)} inputs, exit {codes}: each one line on stderr naming the problem, no traceback; "
                  "the parametrized cases create or change nothing beside the inputs (the others say what they "
                  "leave)."]
    return "\n".join(lines)


def rewrite(doc: str, blocks: dict[str, str]) -> str:
    """`doc` with each generated block replaced; every block must already be marked in it."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end generated: {name} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"the doc has no generated block '{name}' (<!-- generated: {name} --> ... "
                             f"<!-- end generated: {name} -->)")
        doc = pattern.sub(lambda m, body=body: m[1] + body + "\n" + m[2], doc)
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("--record", type=Path, help="keep the cases' JSON lines in this file (default: a "
                                                    "temporary file); with --no-run, rewrite the doc from it")
    parser.add_argument("--no-run", action="store_true", help="do not run the matrices: use --record as it is")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        record = args.record or Path(tmp) / "record.jsonl"
        if args.no_run:
            code = 0 if record.exists() else 1
        else:
            record.unlink(missing_ok=True)
            code = run_matrices(record)
        rows = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    if code != 0:
        print(f"reliability_report: a case failed (pytest exit {code}); {args.doc} left as it was", file=sys.stderr)
        return 1
    by_module = {name: [r for r in rows if r["module"].endswith(Path(path).stem)] for name, path in MODULES.items()}
    blocks = {"fault-matrix": fault_table(by_module["fault-matrix"]),
              "bad-inputs": bad_input_table(by_module["bad-inputs"])}
    args.doc.write_text(rewrite(args.doc.read_text(), blocks))
    print(f"{args.doc}: {len(by_module['fault-matrix'])} fault cases, {len(by_module['bad-inputs'])} bad inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
