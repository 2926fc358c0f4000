"""R7 FLAGS: the compressed plane decompresses to exactly the flags the renderer set, saturated cores are
BLOOM, the R7-only artifacts sit near bright stars, alter their pixels and are in the truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.io import fits
from test_sim_r7_format import _raw_header

from spxbatch.sim import field_sources, make, releases, render
from spxbatch.sim.instrument import Detector
from spxbatch.sim.r7 import R7_FLAG_BITS, R7_ONLY_MASK
from spxbatch.sim.render import or_near
from spxbatch.sim.scene import bit

ARTIFACTS = ("HALO", "GHOST", "STREAK", "CROSSTALK", "SNOWBALL")


def _flags(info, rel) -> np.ndarray:
    with fits.open(info.root / rel) as hdul:
        return np.array(hdul["FLAGS"].data)


def test_compressed_flags_decompress_to_the_rendered_flags(sim_archive_qr3):
    """Re-render the archive's first image from its plan and compare with the file's FLAGS bit for bit."""
    info = sim_archive_qr3
    sources = field_sources(npix=info.npix, seed=info.seed, field=info.field)
    dets = {d: Detector(d, info.npix) for d in range(1, 7)}
    ra0, dec0 = make.field_centre(info.field)
    _, jobs = releases.plan("qr3", 8, info.npix, info.seed, info.field, False, sources, dets, ra0, dec0)
    job = next(j for j in jobs if j.versions)
    r = render.render(job.exposure, dets[job.detector], job.where, sources, seed=info.seed, noise=True,
                      artifacts=True, persistence={}, r7=True)
    rel = job.versions[0].relpath(job.exposure.obs_id, job.detector)
    assert rel == info.files[0]
    assert np.array_equal(_flags(info, rel), r.flags)
    with fits.open(info.root / rel) as hdul:
        assert np.array_equal(hdul["IMAGE"].data, r.image.astype(np.float32), equal_nan=True)
    assert int(_raw_header(info.root / rel, "FLAGS")["NAXIS2"]) == info.npix


def test_saturated_cores_bloom(sim_archive_qr3):
    info = sim_archive_qr3
    n_over = 0
    for rel in info.files:
        flags = _flags(info, rel)
        over = (flags & bit("OVERFLOW")) != 0
        bloom = (flags & bit("BLOOM")) != 0
        n_over += over.sum()
        expect = over.copy()
        for s in (1, 2):  # OVERFLOW pixels and the two rows above and below them
            expect[s:] |= over[:-s]
            expect[:-s] |= over[s:]
        assert np.array_equal(bloom, expect)
    assert n_over > 0


def test_r7_artifacts_are_planted_recorded_and_in_the_truth(sim_archive_qr3):
    info = sim_archive_qr3
    defects = pd.read_parquet(info.truth["defects"])
    meas = pd.read_parquet(info.truth["measurements"])
    assert set(ARTIFACTS) <= set(defects["kind"])
    for rel in info.files:
        flags = _flags(info, rel)
        mine = defects[defects.relpath == rel]
        # Every planted pixel carries its bit, and the recorded final bits are the file's.
        for kind in ARTIFACTS:
            d = mine[mine.kind == kind]
            assert ((flags[d.y, d.x] & bit(kind)) != 0).all()
        assert np.array_equal(flags[mine.y, mine.x], mine.bits.to_numpy())
        # No R7-only bit is set where nothing was planted (BLOOM aside, which follows OVERFLOW).
        planted = np.zeros_like(flags, dtype=bool)
        planted[mine.y, mine.x] = True
        other = flags & R7_ONLY_MASK & ~bit("BLOOM")
        assert not (other[~planted]).any()
        rows = meas[meas.relpath == rel]
        ix, iy = np.rint(rows.x).astype(int).to_numpy(), np.rint(rows.y).astype(int).to_numpy()
        assert np.array_equal(rows.artifact_bits_near.to_numpy(), or_near(flags & R7_ONLY_MASK, ix, iy, 4))
        assert np.array_equal(rows.flags_near.to_numpy(), or_near(flags, ix, iy, 3))
    # Halos and crosstalk come from bright stars: the bright sources' measurements are touched.
    assert (meas.artifact_bits_near & (1 << R7_FLAG_BITS["HALO"]) != 0).any()
    assert (meas.artifact_bits_near == 0).mean() > 0.5


def test_halo_light_is_added_where_flagged(sim_archive_qr3, sim_archive_qr3_noiseless):
    """The noisy and noiseless archives share their sky: halo pixels are brighter in the noisy one."""
    info, clean = sim_archive_qr3, sim_archive_qr3_noiseless
    defects = pd.read_parquet(info.truth["defects"])
    halo = defects[defects.kind == "HALO"]
    rel = halo.relpath.value_counts().index[0]
    d = halo[halo.relpath == rel]
    with fits.open(info.root / rel) as a, fits.open(clean.root / rel) as b:
        excess = a["IMAGE"].data[d.y, d.x].astype(float) - b["IMAGE"].data[d.y, d.x]
        noise = np.sqrt(a["VARIANCE"].data[d.y, d.x])
    assert np.median(excess / noise) > 3


def test_noiseless_r7_files_have_no_artifacts_but_bloom(sim_archive_qr3_noiseless):
    info = sim_archive_qr3_noiseless
    for rel in info.files:
        flags = _flags(info, rel)
        assert not (flags & R7_ONLY_MASK & ~bit("BLOOM")).any()
