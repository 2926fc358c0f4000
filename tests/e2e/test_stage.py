"""Stage now, measure later: `spxbatch stage` writes exactly the data a plan needs into a local mirror over
HTTP (whole files or cutouts, with a manifest), and measuring from the mirror with the server stopped gives
the cube of the HTTP run; a staging run killed with SIGKILL and rerun fetches only what was missing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cubes import assert_cubes_equal, http_reference_cube, kill_group

from spxbatch.archive.mirror import MANIFEST_NAME, read_manifest
from spxbatch.cli.exit_codes import EXIT_INPUT, EXIT_OK, EXIT_STAGE
from spxbatch.cli.main import main
from spxbatch.cube.store import open_cube
from spxbatch.pipeline.stages import run
from spxbatch.plan.index import index_directory
from spxbatch.plan.plan import Plan
from spxbatch.sim.server import serve_archive

IBE = "/ibe/data/spherex/"


@pytest.fixture(scope="module")
def http_cube(sim_archive, client, tmp_path_factory):
    """The reference: the cube measured over HTTP."""
    return http_reference_cube(sim_archive, client, tmp_path_factory.mktemp("stage_http"))


def _check_manifest(mirror: Path, plan: Plan) -> dict:
    """Every manifest file is in the mirror with its size and sha256, and the plan is recorded."""
    manifest = read_manifest(mirror)
    assert manifest["plans"][plan.meta["fingerprint"]]["complete"]
    for relpath, entry in manifest["files"].items():
        if entry["kind"] == "none":
            continue
        data = (mirror / relpath).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], relpath
    return manifest


def _stage_then_measure_offline(sim_archive, client, tmp_path: Path, fetch: str):
    out, mirror = tmp_path / "cube.zarr", tmp_path / "mirror"
    with serve_archive(sim_archive.root) as srv:
        assert run(sim_archive.catalog, out, archive=srv.url, fetch=fetch, progress=False, client=client,
                   stages="plan,stage", mirror=mirror) is None
        staged = len(srv.access_log)
    assert staged > 0 and not out.exists()
    # the server is gone: any network read would fail and show up as failed images
    run(sim_archive.catalog, out, archive=srv.url, fetch=fetch, progress=False, client=client,
        stages="measure,assemble")
    fresh = tmp_path / "fresh.zarr"
    run(sim_archive.catalog, fresh, archive=str(mirror), fetch=fetch, progress=False, client=client)
    return out, fresh, mirror, Plan.load(tmp_path / "cube.run")


def test_whole_file_staging_measures_offline_like_http(sim_archive, client, http_cube, tmp_path):
    out, fresh, mirror, plan = _stage_then_measure_offline(sim_archive, client, tmp_path, "whole")
    manifest = _check_manifest(mirror, plan)
    images = {r.split(IBE)[-1] for r in "/" + plan.images["relpath"]}
    staged_images = {k for k, e in manifest["files"].items() if e["kind"] == "image"}
    assert staged_images == images  # exactly the planned images: not the superseded version, nothing else
    calib = {k for k, e in manifest["files"].items() if e["kind"] == "calibration"}
    assert {k.split("/")[1] for k in calib} == {"solid_angle_pixel_map", "spectral_wcs", "average_psf"}
    assert_cubes_equal(http_cube, open_cube(out).load())
    assert_cubes_equal(http_cube, open_cube(fresh).load())


@pytest.mark.slow
def test_cutout_staging_measures_offline_like_http(sim_archive, client, http_cube, tmp_path):
    out, fresh, mirror, plan = _stage_then_measure_offline(sim_archive, client, tmp_path, "cutout")
    manifest = _check_manifest(mirror, plan)
    cutouts = {k: e for k, e in manifest["files"].items() if e["kind"] == "cutout"}
    assert not any(e["kind"] == "image" for e in manifest["files"].values())  # no whole image staged
    parents = {e["parent"] for e in cutouts.values()}
    assert parents == {r.split(IBE)[-1] for r in "/" + plan.images["relpath"]}
    assert len(cutouts) > len(parents)  # several cutouts of one image: each is planned, none deduplicated
    assert {tuple(e["parent_shape"]) for e in cutouts.values()} == {(128, 128)}
    assert all(k.endswith(".fits") and "_cut" in k for k in cutouts)
    index = index_directory(mirror)
    origin = index.set_index("relpath").loc[sorted(cutouts), ["x0", "y0"]]
    assert (origin["x0"] > 0).any() and (origin["y0"] > 0).any()  # placed in the parent by CRPIXnA
    # a cutout clipped at the parent's corner has CRPIXnA = 1 like a whole file: the manifest tells them apart
    assert ((origin["x0"] == 0) & (origin["y0"] == 0)).any()
    # the mirror's own plan has one row per parent image, carrying its cutouts and frame size
    local = Plan.load(tmp_path / "fresh.run")
    assert sorted(local.images["relpath"]) == sorted(plan.images["relpath"])
    assert set(local.images["nx"]) == {128}
    assert sum(len(c) for c in local.images["cutouts"]) == len(cutouts)
    assert_cubes_equal(http_cube, open_cube(out).load())
    assert_cubes_equal(http_cube, open_cube(fresh).load())


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spxbatch.cli", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_staging_rerun_fetches_only_what_is_missing(sim_archive, tmp_path):
    mirror = tmp_path / "mirror"
    args = ["stage", str(sim_archive.catalog), "-o", str(mirror), "--cube", str(tmp_path / "cube.zarr"),
            "--workers", "1", "--images-per-task", "1", "--no-progress"]
    with serve_archive(sim_archive.root, latency=0.3) as srv:
        proc = _cli([*args, "--archive", srv.url])
        deadline = time.time() + 120
        n_images = None
        staged: set[str] = set()
        while time.time() < deadline and proc.poll() is None:
            if n_images is None and (tmp_path / "cube.run" / "plan" / "plan.json").exists():
                n_images = len(Plan.load(tmp_path / "cube.run").images)
            if n_images and (mirror / MANIFEST_NAME).exists():
                try:
                    files = read_manifest(mirror)["files"]
                except json.JSONDecodeError:
                    files = {}
                staged = {k for k, e in files.items() if e["kind"] == "image"}
                if len(staged) >= n_images // 2:
                    break
            time.sleep(0.05)
        kill_group(proc)
        srv.wait_idle()  # what the killed run had in flight is logged before the rerun's requests
        recorded = {k for k, e in read_manifest(mirror)["files"].items() if e["kind"] == "image"}
        assert 0 < len(recorded) < n_images
        first = len(srv.access_log)

        proc = _cli(args)  # the rerun picks up the saved archive URL and mirror from the run directory
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == EXIT_OK, text
        second = [e["path"] for e in srv.access_log[first:] if e["path"].startswith(IBE)]
        planned = {r.split(IBE)[-1] for r in "/" + Plan.load(tmp_path / "cube.run").images["relpath"]}
        refetched = {p.split(IBE)[-1] for p in second} & planned
        assert not refetched & recorded, f"staged files fetched again: {sorted(refetched & recorded)[:3]}"
        assert refetched == planned - recorded  # and everything missing was fetched
        _check_manifest(mirror, Plan.load(tmp_path / "cube.run"))

        # a file that fails its checksum is fetched again, and only it
        victim = sorted(recorded)[0]
        data = bytearray((mirror / victim).read_bytes())
        data[-1] ^= 0xFF
        (mirror / victim).write_bytes(bytes(data))
        state = tmp_path / "cube.run" / "state.json"
        s = json.loads(state.read_text())
        s["stages"].pop("stage")  # as if the stage had not finished: it checks every file again
        state.write_text(json.dumps(s))
        third = len(srv.access_log)
        assert main(args) == EXIT_OK
        again = {e["path"].split(IBE)[-1] for e in srv.access_log[third:] if e["path"].startswith(IBE)}
        assert again == {victim}
    assert "To finish the run" not in text and "--stages measure,assemble" in text


def test_stage_checks_and_consistency(sim_archive, tmp_path):
    out = str(tmp_path / "c.zarr")
    # 'stage' needs the plan first; unknown stages are refused
    assert main([str(sim_archive.catalog), "-o", out, "--stages", "stage", "--archive", str(sim_archive.root),
                 "--no-progress"]) == EXIT_STAGE
    assert main([str(sim_archive.catalog), "-o", out, "--stages", "plan,fetch", "--no-progress"]) == EXIT_INPUT
    assert main([str(sim_archive.catalog), "-o", out, "--stages", "plan", "--archive", str(sim_archive.root),
                 "--bands", "1,2", "--no-progress"]) == EXIT_OK
    # an override that would make the finished plan inconsistent is refused, with the reason
    proc = subprocess.run([sys.executable, "-m", "spxbatch.cli", str(sim_archive.catalog), "-o", out,
                           "--stages", "plan,stage", "--bands", "3"], capture_output=True, text=True)
    assert proc.returncode == EXIT_INPUT and "bands: [1, 2] -> [3]" in proc.stderr
    # staging from a local archive copies the planned files; a finished stage keeps its mirror
    assert main([str(sim_archive.catalog), "-o", out, "--stages", "plan,stage", "--mirror",
                 str(tmp_path / "m1"), "--workers", "1", "--no-progress"]) == EXIT_OK
    files = read_manifest(tmp_path / "m1")["files"]
    assert {e["detector"] for e in files.values() if e["kind"] == "image"} == {1, 2}
    proc = subprocess.run([sys.executable, "-m", "spxbatch.cli", str(sim_archive.catalog), "-o", out,
                           "--stages", "stage", "--mirror", str(tmp_path / "m2")], capture_output=True, text=True)
    assert proc.returncode == EXIT_INPUT and "already staged its data into" in proc.stderr


def test_staging_a_qr3_archive_takes_its_own_calibration(sim_archive_qr3, tmp_path):
    """QR3's calibration tags are found through the listings while staging, so the mirror measures like the
    archive itself (solid angles and wavelengths from QR3's products, not from the WCS)."""
    from spxbatch.pipeline.executor import SerialExecutor

    out, mirror = tmp_path / "cube.zarr", tmp_path / "mirror"
    with serve_archive(sim_archive_qr3.root) as srv:
        run(sim_archive_qr3.catalog, out, archive=srv.url, fetch="whole", progress=False,
            executor=SerialExecutor(), stages="plan,stage", mirror=mirror)
    calib = {k for k, e in read_manifest(mirror)["files"].items() if e["kind"] == "calibration"}
    assert {k.split("/")[2] for k in calib if k.startswith("qr3/solid_angle")} == {"cal-sapm-v3-2026-191"}
    assert {k.split("/")[1] for k in calib} == {"solid_angle_pixel_map", "spectral_wcs"}  # QR3 has no average_psf
    staged = tmp_path / "staged.zarr"
    run(sim_archive_qr3.catalog, staged, archive=str(mirror), progress=False, executor=SerialExecutor())
    direct = tmp_path / "direct.zarr"
    run(sim_archive_qr3.catalog, direct, archive=str(sim_archive_qr3.root), progress=False,
        executor=SerialExecutor())
    cube = open_cube(staged).load()
    assert set(cube["calibration"].values.astype(str)) == {
        "solid_angle_pixel_map/IMAGE,spectral_wcs/CWAVE,spectral_wcs/CBAND"}
    assert_cubes_equal(open_cube(direct).load(), cube)
