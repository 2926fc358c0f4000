"""A run directory is bound to the catalog rows its work was made from: after the catalog is edited (names
renamed, positions swapped) the same command is refused with one sentence and exit 2, `--stages assemble`
too, and the cube is left as it was; `--replan` starts over, and the new cube carries each source's own
fluxes (never the old rows' under new names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_OK
from spxbatch.cli.main import main as cli_main
from spxbatch.cube.store import open_cube
from spxbatch.pipeline.executor import SerialExecutor
from spxbatch.pipeline.fingerprint import catalog_fingerprint
from spxbatch.pipeline.stages import run
from spxbatch.plan.catalog import make_catalog


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fingerprint_covers_names_positions_order_and_proper_motions():
    base = make_catalog(np.array([10.0, 11.0]), np.array([5.0, 6.0]), np.array(["a", "b"]))
    same = make_catalog(np.array([10.0, 11.0]), np.array([5.0, 6.0]), np.array(["a", "b"]))
    assert catalog_fingerprint(base) == catalog_fingerprint(same)
    for other in (make_catalog(np.array([10.0, 11.0]), np.array([5.0, 6.0]), np.array(["a", "c"])),
                  make_catalog(np.array([10.0, 11.0 + 1e-12]), np.array([5.0, 6.0]), np.array(["a", "b"])),
                  make_catalog(np.array([11.0, 10.0]), np.array([6.0, 5.0]), np.array(["b", "a"])),
                  make_catalog(np.array([10.0, 11.0]), np.array([5.0, 6.0]), np.array(["a", "b"]),
                               extra={"pmra": np.array([1.0, 2.0])})):
        assert catalog_fingerprint(other)["sha256"] != catalog_fingerprint(base)["sha256"]


def test_an_edited_catalog_is_refused_then_replanned(sim_archive, tmp_path, capsys):
    rows = pd.read_csv(sim_archive.catalog).head(40)
    catalog, out = tmp_path / "stars.csv", tmp_path / "stars.zarr"
    rows.to_csv(catalog, index=False)
    first = run(catalog, out, archive=str(sim_archive.root), progress=False, executor=SerialExecutor())
    measured = [str(n) for n in first["source"].values[first["row_size"].values > 0]]
    a, b = (int(np.flatnonzero(rows["name"] == n)[0]) for n in measured[:2])
    edited = rows.copy()
    edited.loc[a, "name"] = "renamed-" + str(rows.loc[a, "name"])  # a new name on an old position
    edited.loc[[a, b], ["ra", "dec"]] = rows.loc[[b, a], ["ra", "dec"]].to_numpy()  # two positions swapped
    edited.to_csv(catalog, index=False)
    before = _tree(out)

    command = [str(catalog), "-o", str(out), "--archive", str(sim_archive.root), "--no-progress"]
    for argv in (command, [*command, "--stages", "assemble"]):
        assert cli_main(argv) == EXIT_INPUT
        err = capsys.readouterr().err
        assert err.startswith("spxbatch: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert f"catalog {catalog} changed" in err and "--replan" in err, err
        assert _tree(out) == before  # no cube with old fluxes under new names

    assert cli_main([*command, "--replan", "--stages", "plan"]) == EXIT_OK, capsys.readouterr().err
    again = run(catalog, out, archive=str(sim_archive.root), progress=False, executor=SerialExecutor())
    assert list(again["source"].values) == list(edited["name"])
    old, new = first.spx, again.spx
    swapped = {edited.loc[a, "name"]: rows.loc[b, "name"], edited.loc[b, "name"]: rows.loc[a, "name"]}
    for name, measured_as in swapped.items():  # each name carries the fluxes measured at its own position
        np.testing.assert_array_equal(np.sort(new.source(name)["flux"].values),
                                      np.sort(old.source(measured_as)["flux"].values))
    kept = [str(n) for n in edited["name"] if n not in swapped]
    for name in kept:
        np.testing.assert_array_equal(new.source(name)["flux"].values, old.source(name)["flux"].values)
    assert open_cube(out, dask=False).sizes["obs"] == again.sizes["obs"]


def test_finished_work_without_a_catalog_record_is_refused_until_replan(sim_archive, tmp_path, capsys):
    """A run directory with finished work but no catalog.json (made before the binding existed) cannot be
    shown to belong to the catalog: refused with one sentence pointing at --replan, nothing changed; --replan
    binds it and runs."""
    out = tmp_path / "stars.zarr"
    command = [str(sim_archive.catalog), "-o", str(out), "--archive", str(sim_archive.root), "--no-progress",
               "--stages", "plan"]
    assert cli_main(command) == EXIT_OK
    (tmp_path / "stars.run" / "catalog.json").unlink()
    before = _tree(tmp_path)
    assert cli_main(command) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("spxbatch: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "holds finished work but no record of the catalog rows" in err and "--replan" in err, err
    assert _tree(tmp_path) == before
    assert cli_main([*command, "--replan"]) == EXIT_OK
    assert (tmp_path / "stars.run" / "catalog.json").exists()
