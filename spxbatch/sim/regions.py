"""Small self-contained synthetic regions for photometry unit tests and the speed benchmark.

Gaussian PSF (with a core offset) integrated exactly over 0.1-px cells for the cube and over native
pixels for the stars, a TAN(-SIP) header with the parent-frame cards, a WCS-WAVE table, FLAGS cards,
flat-plus-gradient zodi and optional Gaussian noise. Not the simulated archive: no files, no server.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from scipy.special import ndtr

from spxbatch.level2.constants import FLAG_BITS, PIXEL_SCALE_ARCSEC, PSF_OVERSAMP, PSF_SIZE, PSF_ZONES
from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable
from spxbatch.level2.wcs import celestial_wcs


def gaussian_cells(edges_x: np.ndarray, edges_y: np.ndarray, sigma: float, mux: float, muy: float) -> np.ndarray:
    """Integral of a unit 2-D Gaussian over cells: edges (n, mx+1), (n, my+1) -> (n, my, mx)."""
    gx = np.diff(ndtr((edges_x - mux) / sigma), axis=-1)
    gy = np.diff(ndtr((edges_y - muy) / sigma), axis=-1)
    return gy[:, :, None] * gx[:, None, :]


def psf_cube(sigma: float = 0.85, offset: tuple[float, float] = (0.03, -0.02), npix: int = 2040,
             swapped: bool = False) -> PSFCube:
    """A (121, 101, 101) cube of one Gaussian (the same in every zone) and its zone cards."""
    half = PSF_SIZE // 2
    edges = ((np.arange(PSF_SIZE + 1) - half - 0.5) / PSF_OVERSAMP)[None, :]
    plane = gaussian_cells(edges, edges, sigma, *offset)[0]
    cube = np.repeat((plane / plane.sum())[None].astype(np.float32), PSF_ZONES**2, axis=0)
    h = fits.Header()
    h["OVERSAMP"] = PSF_OVERSAMP
    c = (np.arange(PSF_ZONES) + 0.5) * npix / PSF_ZONES - 0.5
    for iy in range(PSF_ZONES):
        for ix in range(PSF_ZONES):
            k = iy * PSF_ZONES + ix + 1
            xc, yc = (c[iy], c[ix]) if swapped else (c[ix], c[iy])
            h[f"XCTR_{k}"] = float(xc)
            h[f"YCTR_{k}"] = float(yc)
    return PSFCube(cube=cube, header=h)


def stars(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: float = 0.85,
          offset: tuple[float, float] = (0.03, -0.02), half: int = 7) -> np.ndarray:
    """Image (MJy/sr-px units, i.e. flux per pixel) of Gaussian stars at 0-based (x, y), pixel-integrated."""
    img = np.zeros(shape)
    ny, nx = shape
    ix = np.floor(np.asarray(x) + 0.5).astype(int)
    iy = np.floor(np.asarray(y) + 0.5).astype(int)
    k = np.arange(-half, half + 2) - 0.5
    ex = (ix - np.asarray(x))[:, None] + k[None, :]
    ey = (iy - np.asarray(y))[:, None] + k[None, :]
    st = gaussian_cells(ex, ey, sigma, *offset) * np.asarray(flux)[:, None, None]
    off = np.arange(-half, half + 1)
    px = (ix[:, None, None] + off[None, None, :]) + 0 * off[None, :, None]
    py = (iy[:, None, None] + off[None, :, None]) + 0 * off[None, None, :]
    ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    np.add.at(img, (py[ok], px[ok]), st[ok])
    return img


def near_points(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Boolean image: pixels whose centre lies within `radius` of any of the 0-based points (x, y)."""
    ny, nx = shape
    near = np.zeros(shape, dtype=bool)
    off = np.arange(-(int(np.ceil(radius)) + 1), int(np.ceil(radius)) + 2)
    px = np.floor(np.asarray(x) + 0.5).astype(int)[:, None, None] + off[None, None, :]
    py = np.floor(np.asarray(y) + 0.5).astype(int)[:, None, None] + off[None, :, None]
    d2 = (px - np.asarray(x)[:, None, None]) ** 2 + (py - np.asarray(y)[:, None, None]) ** 2
    sel = (d2 < radius**2) & (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    near[np.broadcast_to(py, sel.shape)[sel], np.broadcast_to(px, sel.shape)[sel]] = True
    return near


def image_header(npix: int, sip: bool = True, detector: int = 3) -> fits.Header:
    """IMAGE header of a full frame: TAN(-SIP) at (150, 2), CRPIXnA = 1, WAVE-TAB cards, times, ids."""
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = npix
    h["NAXIS2"] = npix
    h["CTYPE1"] = "RA---TAN-SIP" if sip else "RA---TAN"
    h["CTYPE2"] = "DEC--TAN-SIP" if sip else "DEC--TAN"
    h["CRPIX1"] = (npix + 1) / 2
    h["CRPIX2"] = (npix + 1) / 2
    h["CRVAL1"] = 150.0
    h["CRVAL2"] = 2.0
    s = PIXEL_SCALE_ARCSEC / 3600
    h["CD1_1"] = -s
    h["CD1_2"] = 0.0
    h["CD2_1"] = 0.0
    h["CD2_2"] = s
    if sip:
        h["A_ORDER"] = 2
        h["B_ORDER"] = 2
        h["A_2_0"] = 3e-6 * 2040 / npix
        h["B_0_2"] = -2e-6 * 2040 / npix
        h["A_1_1"] = 1e-6 * 2040 / npix
    h["CRPIX1A"] = 1.0
    h["CRPIX2A"] = 1.0
    h["WCSAXESW"] = 2
    for i, axis in ((1, "X"), (2, "Y")):
        h[f"CTYPE{i}W"] = "WAVE-TAB"
        h[f"CUNIT{i}W"] = "um"
        h[f"CRPIX{i}W"] = 0.0
        h[f"CRVAL{i}W"] = 0.0
        h[f"CDELT{i}W"] = 1.0
        h[f"PS{i}_0W"] = "WCS-WAVE"
        h[f"PS{i}_1W"] = "VALUES"
        h[f"PS{i}_2W"] = axis
        h[f"PV{i}_3W"] = i
    h["DETECTOR"] = detector
    h["MJD-BEG"] = 60800.0
    h["MJD-END"] = 60800.0 + 115.12 / 86400
    h["OBSID"] = "2025W18_2B_0001_1"
    h["BUNIT"] = "MJy/sr"
    return h


def wave_table(npix: int, lo: float = 1.63, hi: float = 2.43) -> WaveTable:
    """An 11 x 11 WCS-WAVE table (1-based control points) with lambda geometric in y, a slight x curve."""
    xs = np.linspace(1, npix, 11)
    ys = np.linspace(1, npix, 11)
    gx, gy = np.meshgrid(xs, ys)
    lam = lo * (hi / lo) ** ((gy - 1) / (npix - 1)) * (1 + 0.002 * ((gx - npix / 2) / npix) ** 2)
    vals = np.stack([lam, lam / 41.0], axis=-1)
    return WaveTable(x=xs, y=ys, values=vals, header=fits.Header())


def make_region(
    npix: int = 128,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    flux: np.ndarray | None = None,
    sky: float = 0.3,
    zodi: float = 0.25,
    read_var: float = 1e-4,
    noise: bool = False,
    seed: int = 0,
    sip: bool = True,
    with_psf: bool = True,
    version: str = "6.5.6",
    source_radius: float = 4.0,
) -> tuple[ImageRegion, np.ndarray, np.ndarray]:
    """A full-frame region with stars at (x, y) of total `flux` (MJy/sr x px); returns (region, ra, dec).

    Sky = zodi plane (a gradient around `zodi`) + a flat residual `sky - zodi`; variance = read_var +
    1e-3 x signal. `noise` draws Gaussian noise from that variance. SOURCE is flagged within
    `source_radius` px of each star, as the archive does (it keeps stars out of the zodi fit).
    """
    x = np.array([npix / 2.0]) if x is None else np.asarray(x, dtype=float)
    y = np.array([npix / 2.0]) if y is None else np.asarray(y, dtype=float)
    flux = np.ones(x.size) if flux is None else np.broadcast_to(np.asarray(flux, dtype=float), x.shape)
    yy, xx = np.mgrid[0:npix, 0:npix]
    zplane = zodi * (1 + 0.2 * (xx / npix - 0.5) + 0.1 * (yy / npix - 0.5))
    signal = zplane + (sky - zodi) + stars((npix, npix), x, y, flux)
    var = read_var + 1e-3 * np.abs(signal)
    img = signal + (np.random.default_rng(seed).normal(size=signal.shape) * np.sqrt(var) if noise else 0.0)
    flags = np.zeros((npix, npix), dtype=np.int32)
    if source_radius > 0:
        flags[near_points((npix, npix), x, y, source_radius)] |= 1 << FLAG_BITS["SOURCE"]
    hdr = image_header(npix, sip=sip)
    fh = fits.Header()
    for name, bit in FLAG_BITS.items():
        fh[f"HIERARCH MP_{name}"] = bit
    ph = fits.Header()
    ph["VERSION"] = version
    region = ImageRegion(
        primary_header=ph,
        image_header=hdr,
        flags_header=fh,
        image=img.astype(np.float32),
        flags=flags,
        variance=var.astype(np.float32),
        zodi=zplane.astype(np.float32),
        x0=0,
        y0=0,
        wave=wave_table(npix),
        psf=psf_cube(npix=npix) if with_psf else None,
        parent_shape=(npix, npix),
    )
    ra, dec = celestial_wcs(hdr).all_pix2world(x, y, 0)
    return region, np.asarray(ra), np.asarray(dec)


def subregion(region: ImageRegion, x0: int, y0: int, nx: int, ny: int, as_cutout: bool = True) -> ImageRegion:
    """A rectangle of a full-frame region; `as_cutout` shifts CRPIX, CRPIXnA, CRPIXnW like an IRSA cutout."""
    hdr = region.image_header.copy()
    if as_cutout:
        for suffix in ("", "A", "W"):
            hdr[f"CRPIX1{suffix}"] = float(hdr[f"CRPIX1{suffix}"]) - x0
            hdr[f"CRPIX2{suffix}"] = float(hdr[f"CRPIX2{suffix}"]) - y0
    sl = (slice(y0, y0 + ny), slice(x0, x0 + nx))

    def cut(a):
        return None if a is None else np.ascontiguousarray(a[sl])

    return ImageRegion(
        primary_header=region.primary_header, image_header=hdr, flags_header=region.flags_header,
        image=cut(region.image), flags=cut(region.flags), variance=cut(region.variance), zodi=cut(region.zodi),
        x0=x0, y0=y0, wave=region.wave, psf=region.psf, parent_shape=region.parent_shape,
        solid_angle=cut(region.solid_angle), cwave=cut(region.cwave), cband=cut(region.cband),
    )
