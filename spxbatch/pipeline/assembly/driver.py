"""The assembly stage as a shuffle on the workers, resumable block by block.

1. Shuffle: the parts, in batches of ~BATCH_BYTES, are split by source block into spill files (one task per
   batch); each batch's marker records its rows per block and its failure rows.
2. Layout: from those counts, where each block's rows and each batch's failures start; the store is created
   with the full schema (a template from one source's cube) before any region is written.
3. Reduce: one task per block (its sources' variables and its rows) and one per batch (its failure rows), each
   marked done when written. Then the metadata is consolidated and the store moved over the output.

The client holds per-block and per-batch counts, the catalog (names, positions: it has them anyway), the
planned flag per source (1 bit each) and the image URLs; never a row of the parts. The state lives in
RUN_DIR/assembly/ and is fingerprinted by the parts (names, sizes, times), the catalog size and the output: a
run killed in assembly resumes, with the options it started with, the batches and blocks not yet marked;
parts changed since (a rerun measured again) start it over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spxbatch.cube.regions import consolidate
from spxbatch.cube.store import check_replaceable
from spxbatch.errors import StageError
from spxbatch.files import atomic_path, atomic_write_bytes, no_room, write_error
from spxbatch.pipeline.assembly.blocks import BlockJob, StoreLayout, sample_cube, write_block, write_failures
from spxbatch.pipeline.assembly.layout import (
    batch_bytes,
    batches_by_size,
    n_blocks,
    offsets,
    row_chunk,
    sources_per_block,
)
from spxbatch.pipeline.assembly.shuffle import shuffle_batch
from spxbatch.pipeline.assembly.store import create_store
from spxbatch.pipeline.executor import Executor, Outcome, Task, run_in_waves
from spxbatch.pipeline.rundir import RunDir
from spxbatch.plan.plan import Plan


@dataclass(frozen=True)
class AssemblyOptions:
    """How the assembly cuts the work; None: from the run's size (`layout`: sources_per_block from the
    catalog's, batch bytes from the parts', row chunks from the rows per block or batch)."""

    sources_per_block: int | None = None
    obs_chunk: int | None = None
    failure_chunk: int | None = None
    batch_bytes: int | None = None


def planned_sources(run_dir: str, n_sources: int) -> np.ndarray:
    """(worker) The sources the plan pairs with some image, as packed bits (n_sources / 8 bytes), read one
    plan partition at a time."""
    planned = np.zeros(n_sources, dtype=bool)
    for part in Plan.load(run_dir).partitions(["source_index"]):
        planned[part["source_index"].to_numpy(np.int64)] = True
    return np.packbits(planned)


class Assembly:
    """The assembly state of one run directory (RUN_DIR/assembly) and the steps that advance it."""

    def __init__(self, rundir: RunDir, output: str | Path, n_sources: int, options: AssemblyOptions):
        """`options` apply to a new assembly; one resumed (same parts, catalog size and output) keeps the
        options it started with, so its blocks and batches stay the ones its markers count."""
        self.rundir, self.output, self.n = rundir, Path(output), n_sources
        self.dir = rundir.path / "assembly"
        self.spill = self.dir / "spill"
        self.store = self.output.with_name(f".{self.output.name}.assembling")
        self.parts = sorted(rundir.parts_dir.glob("img_*.parquet"))
        stats = [p.stat() for p in self.parts]
        digest = hashlib.sha256(json.dumps([n_sources, str(self.store)]).encode())
        for p, s in zip(self.parts, stats, strict=True):
            digest.update(f"{p.name}:{s.st_size}:{s.st_mtime_ns}\n".encode())
        self.fingerprint = digest.hexdigest()
        saved = rundir.read_json("assembly/state.json") or {}
        if saved.get("fingerprint") == self.fingerprint and "options" in saved:
            options = AssemblyOptions(**saved["options"])
        self.options = options
        self.per_block = options.sources_per_block or sources_per_block(n_sources)
        self.blocks = n_blocks(n_sources, self.per_block)
        sizes = [s.st_size for s in stats]
        self.batches = batches_by_size(sizes, options.batch_bytes or batch_bytes(sizes))

    # --- state --------------------------------------------------------------------------------------------
    def _marker(self, kind: str, i: int) -> Path:
        return self.dir / kind / f"{i:06d}.json"

    def _done(self, kind: str, i: int) -> dict[str, Any] | None:
        p = self._marker(kind, i)
        return json.loads(p.read_text()) if p.exists() else None

    def _mark(self, kind: str, i: int, record: dict[str, Any]) -> None:
        atomic_write_bytes(self._marker(kind, i), json.dumps(record).encode())

    def reset_if_stale(self) -> None:
        """Discard the state of an assembly of other parts, or whose store is gone (moved over the
        output by a run killed before it cleaned up)."""
        state = self.rundir.read_json("assembly/state.json")
        stale = state is not None and (state.get("fingerprint") != self.fingerprint
                                       or (state.get("store_created") and not self.store.exists()))
        if state is None or stale:
            self.clean()
            self.dir.mkdir(parents=True, exist_ok=True)
            self.rundir.write_json("assembly/state.json", {"fingerprint": self.fingerprint,
                                                           "options": dataclasses.asdict(self.options)})

    def clean(self) -> None:
        """Remove the assembly state, its spill files and any half-written store."""
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.store, ignore_errors=True)

    # --- steps --------------------------------------------------------------------------------------------
    def shuffle(self, executor: Executor, urls: pd.Series) -> list[dict[str, Any]]:
        """Shuffle every batch not yet marked; returns every batch's counts, in batch order."""
        todo = [i for i in range(len(self.batches)) if self._done("shuffled", i) is None]

        def task_of(batch: list[int]) -> Task:
            i = batch[0]
            paths = [self.parts[j] for j in self.batches[i]]
            ids = [int(p.stem[4:]) for p in paths]
            return Task(shuffle_batch, ([str(p) for p in paths], i, {k: str(urls.get(k, "")) for k in ids},
                                        str(self.spill), self.per_block, self.blocks), key=f"shuffle-{i}")

        run_in_waves(executor, [[i] for i in todo], task_of, self._recorder("shuffled"))
        return [self._done("shuffled", i) or {} for i in range(len(self.batches))]

    def _recorder(self, kind: str) -> Callable[[list[int], Outcome], None]:
        def done(batch: list[int], outcome: Outcome) -> None:
            cause = no_room(outcome.error) if outcome.error is not None else None
            if cause is not None:  # a full disk: one sentence and exit 6; the marked steps are kept
                raise write_error(cause.filename or self.spill, cause) from outcome.error
            if outcome.error is not None:
                raise StageError(f"assembly: {kind} task {batch[0]} failed: "
                                 f"{type(outcome.error).__name__}: {outcome.error}") from outcome.error
            self._mark(kind, batch[0], {"result": outcome.result})
        return done

    def layout(self, counts: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, StoreLayout]:
        """(first row of each block, first failure row of each batch, the store's layout)."""
        rows = np.sum([c["result"]["obs"] for c in counts], axis=0, dtype=np.int64) if counts else \
            np.zeros(self.blocks, dtype=np.int64)
        fails = np.array([c["result"]["failures"] for c in counts], dtype=np.int64)
        sizes = {"source": self.n, "obs": int(rows.sum()), "failure": int(fails.sum())}
        chunks = {"source": self.per_block,
                  "obs": self.options.obs_chunk or row_chunk(sizes["obs"], self.blocks),
                  "failure": self.options.failure_chunk or row_chunk(sizes["failure"], len(fails))}
        return offsets(rows), offsets(fails), StoreLayout(str(self.store), str(self.spill), sizes, chunks)

    def create(self, layout: StoreLayout, first_block: int | None, names: np.ndarray, attrs: dict[str, Any]) -> None:
        """Create the store (once), its template the cube of one source of the run (`sample_cube`), so every
        variable and dtype is the one `assemble_cube` makes."""
        state = self.rundir.read_json("assembly/state.json") or {}
        if state.get("store_created"):
            return
        create_store(layout.path, sample_cube(layout.spill, first_block), layout.sizes, layout.chunks, names, attrs)
        self.rundir.write_json("assembly/state.json", {**state, "store_created": True})

    def reduce(self, executor: Executor, jobs: list[BlockJob], fail_starts: np.ndarray, layout: StoreLayout) -> None:
        """Write every block and every batch's failures not yet marked."""
        todo = [("block", j.block) for j in jobs if self._done("written", j.block) is None]
        todo += [("failures", i) for i in range(len(fail_starts)) if self._done("failures", i) is None]
        by_block = {j.block: j for j in jobs}

        def task_of(item: list[tuple[str, int]]) -> Task:
            kind, i = item[0]
            if kind == "block":
                return Task(write_block, (by_block[i], layout), key=f"assemble-block-{i}")
            return Task(write_failures, (i, int(fail_starts[i]), layout), key=f"assemble-failures-{i}")

        marks = {"block": self._recorder("written"), "failures": self._recorder("failures")}

        def done(item: list[tuple[str, int]], outcome: Outcome) -> None:
            kind, i = item[0]
            marks[kind]([i], outcome)

        run_in_waves(executor, [[t] for t in todo], task_of, done)

    def finish(self) -> Path:
        """Consolidate, move the store over the output (atomically), drop the assembly state."""
        consolidate(self.store)
        check_replaceable(self.output)
        with atomic_path(self.output) as tmp:
            os.replace(self.store, tmp)
        self.clean()
        return self.output


def assemble_run(rundir: RunDir, output: str | Path, names: np.ndarray, ra: np.ndarray, dec: np.ndarray,
                 urls: pd.Series, attrs: dict[str, Any], executor: Executor,
                 options: AssemblyOptions | None = None) -> Path:
    """Assemble the run directory's parts into the cube at `output` on `executor` (see the module docstring);
    `urls` maps image_id to the image's URL, `attrs` are the cube's run attributes. Returns the output path."""
    asm = Assembly(rundir, output, len(names), options or AssemblyOptions())
    asm.reset_if_stale()
    counts = asm.shuffle(executor, urls)
    obs_starts, fail_starts, layout = asm.layout(counts)
    planned = np.unpackbits(executor.call(planned_sources, str(rundir.path), len(names)),
                            count=len(names)).astype(bool)
    jobs = []
    for b in range(asm.blocks):
        lo, hi = b * asm.per_block, min(len(names), (b + 1) * asm.per_block)
        jobs.append(BlockJob(b, lo, int(obs_starts[b]), np.asarray(names[lo:hi]), np.asarray(ra[lo:hi], float),
                             np.asarray(dec[lo:hi], float), planned[lo:hi]))
    with_rows = np.flatnonzero(np.diff(np.append(obs_starts, layout.sizes["obs"])) > 0)
    asm.create(layout, int(with_rows[0]) if len(with_rows) else None, np.asarray(names), attrs)
    asm.reduce(executor, jobs, fail_starts, layout)
    return asm.finish()
