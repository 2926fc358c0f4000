"""The run directory: config, plan, one result part per finished image (written atomically) and a state file.

Layout::

    RUN_DIR/config.json        the effective RunConfig
    RUN_DIR/catalog.json       the fingerprint of the catalog rows the plan and parts were made from
    RUN_DIR/state.json         stages done, counts, timestamps
    RUN_DIR/stage.json         where the 'stage' stage writes its mirror, and what last failed to stage
    RUN_DIR/plan/              the plan tables (images, pairs) and the query cache
    RUN_DIR/parts/img_0000042.parquet   measurements (and unmeasured rows) of image 42

A part is written to a temporary name and renamed, so a killed run leaves only whole parts; a rerun skips
the images whose part exists (and, by default, retries those whose part records a fetch failure).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spxbatch.errors import ConfigError
from spxbatch.files import atomic_write_bytes
from spxbatch.photometry.columns import COLUMNS, Column

#: Every stage, in running order; 'stage' (copy the data the plan needs into a local mirror) is optional.
STAGES = ("plan", "stage", "measure", "assemble")
#: What a run does unless told otherwise.
DEFAULT_STAGES = ("plan", "measure", "assemble")
#: The record of the catalog rows the run's work was made from (`pipeline.fingerprint`).
CATALOG_RECORD = "catalog.json"
#: The stages each stage needs done first.
NEEDS: dict[str, tuple[str, ...]] = {"plan": (), "stage": ("plan",), "measure": ("plan",),
                                     "assemble": ("plan", "measure")}


#: Columns a part holds besides measure_region's (photometry.columns.COLUMNS): the image they come from.
PART_EXTRA: dict[str, Column] = {
    "image_id": Column("int64", None, "the plan's image id of the part"),
    "release": Column("object", "", "the release folder the file lies in (qr2, qr3)"),
    "processing": Column("object", "", "the file's processing tag, e.g. l2b-v26-2026-196"),
    "pipeline_version": Column("object", "", "the file's PRIMARY VERSION (6.x: QR2 layout, 7.x: R7)"),
    "psf_model": Column("object", "", "where the PSF model came from: file, average_psf or qr3 epsf"),
    "calibration": Column("object", "", "calibration planes used (product/EXTNAME, comma-separated)"),
    "position_mjd": Column("float64", np.nan, "the MJD the catalog position was moved to by its proper motion"),
    "date_added": Column("object", "", "UTC time (ISO 8601) the measurement was made and added to the cube"),
}
#: Types of the columns whose photometry dtype is "as given".
_GIVEN_DTYPES = {"source_index": "int64"}


def _arrow_type(name: str, col: Column) -> pa.DataType:
    """The Arrow type of one schema column (numpy strings and objects are Arrow strings)."""
    dtype = np.dtype(col.dtype or _GIVEN_DTYPES[name])
    return pa.string() if dtype.kind in "OU" else pa.from_numpy_dtype(dtype)


#: The one schema of every part: its column types come from the cube's columns, never from a part's values.
PART_COLUMNS: dict[str, Column] = {**COLUMNS, **PART_EXTRA}
PART_SCHEMA = pa.schema([pa.field(name, _arrow_type(name, col)) for name, col in PART_COLUMNS.items()])


def conform_part(table: pa.Table) -> pa.Table:
    """`table` in PART_SCHEMA: each column cast to its schema type, with the column's fill (the value of a
    source not measured) where a value is missing (NaN in an integer or bool column that an unmeasured row
    made float, or a column absent from a part of unmeasured rows only); absent columns without a fill stay
    null. Raises ValueError for a column the schema does not know, so none is typed by its values."""
    unknown = [c for c in table.column_names if c not in PART_COLUMNS]
    if unknown:
        raise ValueError(f"part columns {unknown} are not in the part schema (rundir.PART_COLUMNS)")
    arrays = []
    for field in PART_SCHEMA:
        fill = PART_COLUMNS[field.name].fill
        if field.name not in table.column_names:
            arrays.append(pa.nulls(len(table), field.type) if fill is None
                          else pa.array(np.full(len(table), fill), type=field.type))
            continue
        col = table[field.name]
        if pa.types.is_floating(col.type) and not pa.types.is_floating(field.type):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
        if pa.types.is_null(col.type) or col.type != field.type:
            col = col.cast(field.type)
        if fill is not None and col.null_count:
            col = pc.fill_null(col, pa.scalar(fill, field.type))
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=PART_SCHEMA)


def dependents(stage: str) -> tuple[str, ...]:
    """`stage` and every stage that needs it, directly or not (in running order)."""
    out = {stage}
    for s in STAGES:
        if any(n in out for n in NEEDS[s]):
            out.add(s)
    return tuple(s for s in STAGES if s in out)


class RunDir:
    """Accessors for one run directory; safe to use from Dask workers that share its filesystem."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def parts_dir(self) -> Path:
        """Where the per-image result parts live."""
        return self.path / "parts"

    @property
    def plan_dir(self) -> Path:
        """Where the plan and the query cache live."""
        return self.path / "plan"

    def check_reusable(self) -> None:
        """Refuse (ConfigError) a path that exists and was not made by spxbatch: neither absent, nor an empty
        directory, nor a directory holding spxbatch's config.json. Asked before any work, so a run never
        writes its plan and parts into a folder of the user's."""
        p = self.path
        if not (p.exists() or p.is_symlink()):
            return
        if p.is_dir() and ((p / "config.json").is_file() or not any(p.iterdir())):
            return
        raise ConfigError(f"run directory {p} already exists and was not made by spxbatch (no config.json); "
                          "refusing to use it (choose another -o or run directory, or remove it yourself)")

    def has_finished_work(self) -> bool:
        """True when some stage finished here: only then do the saved options bind a rerun (a start that
        failed before its first stage finished leaves nothing a corrected command could be mixed with)."""
        return bool(self.read_state()["stages"])

    def create(self) -> RunDir:
        """Make the directory tree (idempotent)."""
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.plan_dir.mkdir(parents=True, exist_ok=True)
        return self

    # --- config and state -------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Save the effective configuration."""
        atomic_write_bytes(self.path / "config.json", json.dumps(config, indent=2, sort_keys=True).encode())

    def read_config(self) -> dict[str, Any] | None:
        """The saved configuration, or None for a new run directory."""
        p = self.path / "config.json"
        return json.loads(p.read_text()) if p.exists() else None

    def read_state(self) -> dict[str, Any]:
        """The state file (stages done and their summaries); empty for a new run."""
        p = self.path / "state.json"
        return json.loads(p.read_text()) if p.exists() else {"stages": {}}

    def mark_stage(self, stage: str, **summary: Any) -> None:
        """Record that `stage` finished, with a summary (counts, timings)."""
        state = self.read_state()
        state["stages"][stage] = {"finished": datetime.now(UTC).isoformat(timespec="seconds"), **summary}
        atomic_write_bytes(self.path / "state.json", json.dumps(state, indent=2, sort_keys=True).encode())

    def clear_stage(self, stage: str) -> None:
        """Forget that `stage` (and the stages that need it) finished."""
        state = self.read_state()
        for s in dependents(stage):
            state["stages"].pop(s, None)
        atomic_write_bytes(self.path / "state.json", json.dumps(state, indent=2, sort_keys=True).encode())

    def discard_work(self) -> None:
        """Forget every finished stage and delete the parts (the plan is made again): a replan after the
        catalog changed, so no part of the old rows is ever assembled under the new ones."""
        self.clear_stage("plan")
        for part in self.parts_dir.glob("img_*.parquet"):
            part.unlink()

    def stage_done(self, stage: str) -> bool:
        """True when `stage` finished in this run directory."""
        return stage in self.read_state()["stages"]

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A small JSON record of the run directory (e.g. 'stage.json'), or None when absent."""
        p = self.path / name
        return json.loads(p.read_text()) if p.exists() else None

    def write_json(self, name: str, record: dict[str, Any]) -> None:
        """Save a small JSON record atomically."""
        atomic_write_bytes(self.path / name, json.dumps(record, indent=2, sort_keys=True).encode())

    # --- parts ------------------------------------------------------------------------------------------
    def part_path(self, image_id: int) -> Path:
        """The part file of one image."""
        return self.parts_dir / f"img_{int(image_id):07d}.parquet"

    def write_part(self, image_id: int, table: pd.DataFrame, meta: dict[str, Any]) -> Path:
        """Write one image's rows atomically, in PART_SCHEMA; `meta` (strategy, bytes, error...) goes in the
        file metadata."""
        arrow = conform_part(pa.Table.from_pandas(table, preserve_index=False))
        arrow = arrow.replace_schema_metadata({b"spxbatch": json.dumps(meta).encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(arrow, sink)
        path = self.part_path(image_id)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def part_meta(self, image_id: int) -> dict[str, Any] | None:
        """The metadata of a finished part, or None when the image has no part yet."""
        path = self.part_path(image_id)
        if not path.exists():
            return None
        md = pq.read_schema(path).metadata or {}
        return json.loads(md.get(b"spxbatch", b"{}"))

    def finished_images(self, retry_failed: bool = True) -> set[int]:
        """Image ids whose part exists (minus those that recorded a fetch error, when `retry_failed`)."""
        done = set()
        for p in self.parts_dir.glob("img_*.parquet"):
            image_id = int(p.stem[4:])
            if retry_failed and (self.part_meta(image_id) or {}).get("error"):
                continue
            done.add(image_id)
        return done

    def read_parts(self, image_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """All parts (or those of `image_ids`) concatenated into one DataFrame, each read in PART_SCHEMA (so
        parts written before the schema, or typed by their values, assemble too)."""
        paths = (sorted(self.parts_dir.glob("img_*.parquet")) if image_ids is None
                 else [self.part_path(i) for i in sorted(image_ids)])
        paths = [p for p in paths if p.exists()]
        if not paths:
            return pd.DataFrame()
        return pa.concat_tables([conform_part(pq.read_table(p)) for p in paths]).to_pandas()
