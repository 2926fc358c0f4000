"""Range reads over HTTP take only the PSF cube planes of the zones an image's catalog sources use: the access
log shows those planes and no others, later images of the same PSF read only the planes still missing, the
persistent store keeps each plane, and a model asked for a plane not read refuses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from fetch_checks import HALF, plan_row, sources_on

from spxbatch.fetch.cache import FetchCache, header_digest
from spxbatch.fetch.fetch import FetchOptions, fetch_image
from spxbatch.fetch.store import ProductStore
from spxbatch.fetch.tables import ZONE_METHODS
from spxbatch.level2.psf_zones import catalog_zones
from spxbatch.level2.region import PSFCube, PSFPlaneMissing
from spxbatch.level2.wcs import sky_to_parent_pixel
from spxbatch.photometry.psf import psf_model_for
from spxbatch.sim.server import serve_archive
from spxbatch.sim.server.files import parse_ranges

OPTS = FetchOptions(calibration=False)


@pytest.fixture(scope="module")
def server(sim_archive):
    with serve_archive(sim_archive.root) as srv:
        yield srv


def _zones(path, ra, dec) -> set[int]:
    """The zones (both lookups) of the sources on the file's frame, from an astropy read of its headers."""
    with fits.open(path) as hdul:
        x, y = sky_to_parent_pixel(hdul["IMAGE"].header, ra, dec)
        version = str(hdul[0].header.get("VERSION", "")) or None
        return set(catalog_zones(hdul["PSF"].header, x, y, hdul["IMAGE"].data.shape, version,
                                 ZONE_METHODS).tolist())


def _planes_read(log: list[dict], path) -> list[int]:
    """The PSF planes the logged GETs of `path` read (each range inside the PSF data: whole planes only; a
    header scan's block across the data's end reads the next header, not planes)."""
    with fits.open(path) as hdul:
        info, shape = hdul["PSF"].fileinfo(), hdul["PSF"].data.shape
    start, plane = info["datLoc"], int(np.prod(shape[1:])) * 4
    size = path.stat().st_size
    planes = []
    for e in log:
        for a, b in (parse_ranges(e["range"], size) or []) if e["method"] == "GET" and e["range"] else []:
            if start <= a and b < start + shape[0] * plane:
                assert (a - start) % plane == 0 and (b + 1 - a) % plane == 0, (a, b)
                planes += range((a - start) // plane, (b + 1 - start) // plane)
    return planes


def _same_psf_files(sim_archive) -> list[str]:
    """Two or more files sharing one PSF (same PSF header, so the same content: its DATASUM)."""
    digests = pd.Series({f: header_digest(fits.getheader(sim_archive.root / f, "PSF")) for f in sim_archive.files})
    shared = digests.groupby(digests).groups
    return list(max(shared.values(), key=len))


def test_range_reads_take_the_planes_of_the_sources_zones_once(server, sim_archive, truth, tmp_path):
    first, second = _same_psf_files(sim_archive)[:2]
    cache = FetchCache(store=ProductStore(tmp_path / "store", 10**9))
    seen: set[int] = set()
    for relpath in (first, second):
        path = sim_archive.root / relpath
        ra, dec = sources_on(truth, relpath, 3, spread=True)
        server.clear_log()
        result = fetch_image(plan_row(server, relpath), ra, dec, strategy="range", halfsize=HALF, cache=cache,
                             options=OPTS)
        assert result.error is None
        want = _zones(path, ra, dec)
        read = _planes_read(server.wait_idle(), path)
        assert sorted(read) == sorted(want - seen)  # only the planes missing, each once, with the pixels
        seen |= want
        with fits.open(path) as hdul:
            cube = hdul["PSF"].data
            for region, _ in result.regions:
                assert region.psf.held >= want and region.psf.held == seen
                held = sorted(region.psf.held)
                assert np.array_equal(region.psf.cube[held], cube[held])
        assert 0 < len(seen) < cube.shape[0]
    assert cache.psf_planes_read == len(seen)
    # a new process (an empty cache, the same store) reads none of these planes again
    again = FetchCache(store=ProductStore(tmp_path / "store", 10**9))
    server.clear_log()
    result = fetch_image(plan_row(server, second), *sources_on(truth, second, 3, spread=True), strategy="range",
                         halfsize=HALF, cache=again, options=OPTS)
    assert result.error is None and _planes_read(server.wait_idle(), sim_archive.root / second) == []
    assert again.psf_planes_read == 0


def test_a_model_refuses_a_plane_not_read():
    cube = np.zeros((4, 21, 21), np.float32)
    cube[1, 10, 10] = cube[1, 9:12, 10].sum() + 1.0
    cube[1, 9:12, 9:12] += 0.5
    header = fits.Header({f"{a}CTR_{k}": float(k) for a in "XY" for k in range(1, 5)})
    psf = PSFCube(cube=cube, header=header, digest="planes|test", held={1})
    model = psf_model_for(psf)
    assert np.isfinite(model.fwhm(np.array([1]))[0])
    with pytest.raises(PSFPlaneMissing, match=r"\[2\]"):
        model.fwhm(np.array([1, 2]))
    with pytest.raises(PSFPlaneMissing):
        model.tiles(np.array([3]), np.zeros(1), np.zeros(1), 3)
    with pytest.raises(ValueError, match="digest"):
        PSFCube(cube=cube, header=header, held={1})


def test_zones_prepared_in_another_thread_give_the_same_bits():
    """A fetch thread prepares a cube's zones (`prepare_psf`) while photometry asks for others: every tile and
    FWHM has the bits of a model that computed each zone in turn on one thread."""
    import threading

    from spxbatch.photometry.psf import PSFModel, prepare_psf
    from spxbatch.sim.regions import psf_cube

    full = psf_cube(sigma=0.9)
    rng = np.random.default_rng(1)
    cube = full.cube * rng.uniform(0.5, 1.5, (full.cube.shape[0], 1, 1)).astype(np.float32)  # zones differ
    held = set(range(0, 121, 2))
    zones = np.array(sorted(held))
    phx, phy = rng.uniform(-0.5, 0.5, zones.size), rng.uniform(-0.5, 0.5, zones.size)
    reference = PSFModel.from_cube(PSFCube(cube=cube, header=full.header))
    want_tiles, want_fwhm = reference.tiles(zones, phx, phy, 6), reference.fwhm(zones)
    psf = PSFCube(cube=cube, header=full.header, digest="planes|threads", held=held)
    model = psf_model_for(psf)
    worker = threading.Thread(target=prepare_psf, args=(psf,))
    worker.start()
    got_tiles = np.concatenate([model.tiles(zones[k:k + 1], phx[k:k + 1], phy[k:k + 1], 6)
                                for k in range(zones.size)[::-1]])[::-1]
    worker.join()
    assert np.array_equal(got_tiles, want_tiles) and np.array_equal(model.fwhm(zones), want_fwhm)
    assert set(model._profiles) == held and set(model._fwhm) == held  # prepared: every plane held, no other
