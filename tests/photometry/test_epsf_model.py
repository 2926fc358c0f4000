"""The R7 ePSF model: pixel-centre tiles equal photutils' ImagePSF, the aperture fraction from them recovers
a rendered star's flux (binning the ePSF over pixels like a QR2 plane does not), zone lookup on any grid,
and measure_region on an ePSF region: exact fluxes, the same numbers on a cutout, a strip and the frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sep
from astropy.io import fits
from photutils.psf import ImagePSF

from spxbatch.level2.constants import FLAG_BITS
from spxbatch.level2.epsf import EPSFTable, read_epsf
from spxbatch.level2.psf_zones import zone_index
from spxbatch.level2.region import PSFCube
from spxbatch.photometry.aperture import neighbourhood_halfsize
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.epsf import EPSFModel
from spxbatch.photometry.measure import measure_region
from spxbatch.photometry.psf import PSFModel, aperture_fractions, psf_model_for, psf_tiles
from spxbatch.sim.epsf import make_epsf, table_hdu
from spxbatch.sim.regions import make_region, subregion

NPIX = 2040
#: Sub-pixel phases (x, y), the extremes included.
PHASES = [(0.0, 0.0), (0.5, -0.5), (-0.5, 0.5), (0.23, -0.41), (-0.37, 0.08), (0.499, 0.001)]


@pytest.fixture(scope="module")
def d1():
    """D1's simulated ePSF (21 x 21 zones) and its table as the reader gives it."""
    model = make_epsf(1, NPIX)
    return model, read_epsf(table_hdu(model), "D1")


@pytest.fixture(scope="module")
def d3():
    """D3's simulated ePSF (11 x 41 zones)."""
    model = make_epsf(3, NPIX)
    return model, read_epsf(table_hdu(model), "D3")


def test_tiles_equal_photutils_imagepsf(d1):
    _, table = d1
    model = psf_model_for(table)
    assert isinstance(model, EPSFModel)
    mh = model.tile_half()
    zones = np.array([0, 220, 440, 17, 300, 99])
    px, py = np.array(PHASES).T
    t = psf_tiles(model, zones, 100 + px, 200 + py)  # float32 tiles, as photometry uses them
    assert np.allclose(np.abs(t.phase_x), np.abs(px)) and np.allclose(np.abs(t.phase_y), np.abs(py))
    m = np.arange(-mh, mh + 1)
    yy, xx = np.meshgrid(m, m, indexing="ij")
    for k, z in enumerate(zones):
        psf = ImagePSF(table.arrays[z], oversampling=table.oversampling)
        ref = psf.evaluate(xx, yy, 1.0, t.phase_x[k], t.phase_y[k])
        np.testing.assert_allclose(t.tiles[k], ref, rtol=0, atol=2.0**-24 * ref.max() * 2)
        assert ref[0].max() == ref[-1].max() == 0.0  # the tile holds every pixel the array reaches


def test_tiles_normalise_the_table_and_do_not_depend_on_the_batch(d1):
    _, table = d1
    model = psf_model_for(table)
    rng = np.random.default_rng(4)
    n = 500
    zones = rng.integers(0, table.nzones, n)
    px, py = rng.uniform(-0.5, 0.5, (2, n))
    mh = model.tile_half()
    batch = model.tiles(zones, px, py, mh)
    alone = model.tiles(zones[123:124], px[123:124], py[123:124], mh)
    assert np.array_equal(alone[0], batch[123])
    # a table stored with another normalisation gives the same star images (amplitude = flux)
    scaled = EPSFTable(table.arrays * 3.7, table.xcentre, table.ycentre, table.oversampling, table.header)
    np.testing.assert_allclose(EPSFModel(scaled).tiles(zones, px, py, mh), batch, rtol=1e-12, atol=0)
    assert np.all(np.abs(batch.sum(axis=(1, 2)) - 1) < 0.01)


def _render(sim, x: float, y: float, flux: float) -> np.ndarray:
    """A noiseless 40 x 40 image of one star rendered by the simulator (flux x ePSF at pixel centres)."""
    stamps, x0, y0 = sim.stamps(np.array([x]), np.array([y]))
    image = np.zeros((40, 40))
    h = stamps.shape[1]
    image[y0[0] : y0[0] + h, x0[0] : x0[0] + h] = flux * stamps[0]
    return image


@pytest.mark.parametrize("radius", [1.5, 2.5])
def test_pixel_centre_fraction_recovers_flux_and_integrating_again_does_not(d3, radius):
    sim, table = d3
    epsf = psf_model_for(table)
    header = fits.Header({"OVERSAMP": table.oversampling})
    as_plane = PSFModel.from_cube(PSFCube(cube=table.arrays, header=header))  # the ePSF taken for a QR2 plane
    flux = 1234.5
    for px, py in PHASES:
        x, y = 20 + px, 19 + py
        zone = zone_index(table, np.array([x]), np.array([y]))
        s, _, _ = sep.sum_circle(_render(sim, x, y, flux), [x], [y], [radius], subpix=0)
        fractions = []
        for model in (epsf, as_plane):
            t = psf_tiles(model, zone, np.array([x]), np.array([y]))
            fractions.append(aperture_fractions(t.tiles.astype(float), t.phase_x, t.phase_y, [radius])[0][0])
        right, wrong = s[0] / fractions[0], s[0] / fractions[1]
        assert abs(right / flux - 1) < 1e-4
        # binning the already pixel-convolved ePSF widens it again: too little light in the aperture
        assert wrong / flux - 1 > (0.03 if radius == 1.5 else 0.005)


@pytest.mark.parametrize(("fixture", "grid"), [("d1", (21, 21)), ("d3", (11, 41))])
def test_zone_lookup_nearest_centre_per_axis(request, fixture, grid):
    sim, table = request.getfixturevalue(fixture)
    assert (np.unique(table.xcentre).size, np.unique(table.ycentre).size) == grid
    rows = np.arange(table.nzones)
    for method in ("grid", "header"):
        # each zone's own centre finds its row (x fastest); an erratum VERSION never swaps an R7 table
        for version in ("7.0.5", "6.5.4"):
            assert np.array_equal(zone_index(table, table.xcentre, table.ycentre, version, method), rows)
        rng = np.random.default_rng(2)
        x, y = rng.uniform(-0.5, NPIX - 0.5, (2, 5000))
        assert np.array_equal(zone_index(table, x, y, "6.5.4", method), sim.zone_of(x, y))


def test_fwhm_is_the_epsf_profile_and_cached_by_content(d1, d3):
    _, t1 = d1
    _, t3 = d3
    m1 = psf_model_for(t1)
    assert psf_model_for(read_epsf(table_hdu(make_epsf(1, NPIX)), "again")) is m1
    assert psf_model_for(t3) is not m1
    fwhm = m1.fwhm(np.arange(t1.nzones))
    # the simulator's core FWHM is 1.6 + 0.14 lambda (D1: 0.75-1.1 um), widened by the pixel
    assert np.all((fwhm > 1.75) & (fwhm < 2.2))
    assert m1.max_fwhm() == fwhm.max()


def test_neighbourhood_bound_from_a_table_equals_its_models(d3):
    _, table = d3
    cfg = PhotometryConfig(max_aperture_radius=10.0)
    model = psf_model_for(table)
    assert neighbourhood_halfsize(cfg, table) == neighbourhood_halfsize(cfg, model) < neighbourhood_halfsize(cfg)


def _r7_field(npix: int = 128):
    """A noiseless frame whose stars are flux x the ePSF at pixel centres (D1's model on a 128 px detector:
    zones every ~6 px, so neighbouring stars use different zones), one hot pixel in an aperture."""
    sim = make_epsf(1, npix)
    gx, gy = np.meshgrid(np.arange(14, 120, 15.0), np.arange(14, 120, 15.0))
    rng = np.random.default_rng(8)
    x = gx.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    y = gy.ravel() + rng.uniform(-0.5, 0.5, gx.size)
    flux = rng.uniform(1, 50, x.size)
    # sky == zodi: nothing left after zodi subtraction; the catalogue stars are drawn below, not here
    region, ra, dec = make_region(npix, x, y, np.zeros(x.size), sky=0.25)
    stamps, x0, y0 = sim.stamps(x, y)
    h = stamps.shape[1]
    for k in range(x.size):
        region.image[y0[k] : y0[k] + h, x0[k] : x0[k] + h] += (flux[k] * stamps[k]).astype(np.float32)
    region.flags[round(y[5]), round(x[5]) + 1] |= 1 << FLAG_BITS["HOT"]
    return replace(region, psf=read_epsf(table_hdu(sim), "D1")), ra, dec, x, y, flux


def test_measure_region_on_an_r7_region_is_exact_and_region_independent():
    region, ra, dec, x, y, flux = _r7_field()
    cfg = PhotometryConfig()
    out = measure_region(region, ra, dec, cfg)
    assert np.all(out["status"] == "ok") and np.all(out["psf_zone"] >= 0)
    in_uJy = flux * 23.5045 * out["pixel_solid_angle"]
    np.testing.assert_allclose(out["flux"], in_uJy, rtol=2e-4)  # the hot pixel's share made up from the ePSF
    assert out["condition"][5] != 0 and np.count_nonzero(out["condition"]) == 1
    h = neighbourhood_halfsize(cfg, region.psf)
    sel = (x > 40) & (x < 90) & (y > 40) & (y < 90)
    lo_x, hi_x = int(np.floor(x[sel].min() + 0.5)) - h, int(np.floor(x[sel].max() + 0.5)) + h
    lo_y, hi_y = int(np.floor(y[sel].min() + 0.5)) - h, int(np.floor(y[sel].max() + 0.5)) + h
    ref = measure_region(region, ra[sel], dec[sel], cfg, neighbours=(ra, dec))
    for sub in (subregion(region, lo_x, lo_y, hi_x - lo_x + 1, hi_y - lo_y + 1, as_cutout=True),
                subregion(region, 0, lo_y, region.shape[1], hi_y - lo_y + 1, as_cutout=False)):
        part = measure_region(sub, ra[sel], dec[sel], cfg, neighbours=(ra, dec))
        for key in ("flux", "flux_err", "aperture_correction", "background", "zodi_scale", "psf_zone", "fwhm"):
            assert np.array_equal(part[key], ref[key]), key
