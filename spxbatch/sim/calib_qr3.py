"""QR3's calibration products in IRSA's layout (collection spherex_qr3_cal): `epsf`, `l3_flux_corrections`,
`spectral_wcs` (v5) and `solid_angle_pixel_map` (v3); QR3 has no `average_psf`.

Paths are `qr3/<product>/<tag>/<d>/<product>_D<d>_spx_<tag>.fits`. D3's ePSF was delivered twice: the
first delivery (cal-epsf-v1, 21 x 21 zones) stays beside the current one (cal-epsf-v2, 11 x 41 zones, the
table every R7 level-2 file of D3 carries), so only a client that takes the newest tag from the archive's
listing gets the right one. Each product samples the truth the files were rendered with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from spxbatch.sim import epsf
from spxbatch.sim.instrument import Detector
from spxbatch.sim.paths import processing_date

#: Product -> its tag (the folder name is the product's).
TAGS = {
    "epsf": "cal-epsf-v1-2026-191",
    "l3_flux_corrections": "cal-flxc-v1-2026-191",
    "spectral_wcs": "cal-swcs-v5-2026-191",
    "solid_angle_pixel_map": "cal-sapm-v3-2026-191",
}
#: (product, detector) delivered again under a later tag.
REDELIVERED = {("epsf", 3): "cal-epsf-v2-2026-191"}
#: The pipeline VERSION IRSA's ePSF files carry (real-headers/).
EPSF_VERSION = "7.0.0b6.post2+g6b3a1a7"


def relpath(product: str, detector: int, tag: str | None = None) -> str:
    """Path below the archive root of one detector's QR3 calibration file (`tag`: the current one)."""
    tag = tag or current_tag(product, detector)
    return f"qr3/{product}/{tag}/{detector}/{product}_D{detector}_spx_{tag}.fits"


def current_tag(product: str, detector: int) -> str:
    """The newest delivery's tag of a product for one detector."""
    return REDELIVERED.get((product, detector), TAGS[product])


def _primary(product: str, detector: int, tag: str, extra: list[tuple[str, object, str]] = ()) -> fits.PrimaryHDU:
    hdr = fits.Header()
    hdr["TELESCOP"] = ("SPHEREx", "project name")
    hdr["INSTRUME"] = ("SPHEREx", "instrument name")
    hdr["ORIGIN"] = ("spxbatch.sim", "Simulated IRSA QR3 calibration product")
    hdr["DATE"] = (processing_date(tag), "file creation time (UTC)")
    hdr["DETECTOR"] = (detector, "Detector (band) number")
    hdr["CALTYPE"] = (product, "Calibration product")
    hdr["CALVERS"] = (tag, "Calibration version")
    for key, value, comment in extra:
        hdr[key] = (value, comment)
    return fits.PrimaryHDU(header=hdr)


def _image(data: np.ndarray, name: str, bunit: str | None, dtype=np.float32) -> fits.ImageHDU:
    hdu = fits.ImageHDU(data=data.astype(dtype), name=name)
    if bunit:
        hdu.header["BUNIT"] = bunit
    return hdu


def epsf_hdus(det: Detector, tag: str) -> list[fits.hdu.base.ExtensionHDU]:
    """PRIMARY, EPSF (as in a level-2 file) and EPSF_MOSAIC of one ePSF delivery."""
    model = det.epsf if tag == current_tag("epsf", det.number) else epsf.make_epsf(det.number, det.npix, (21, 21))
    cards = [
        ("VERSION", EPSF_VERSION, "SSDC Pipelines software version"),
        ("NBINX", model.nzx, ""),
        ("NBINY", model.nzy, ""),
        ("NBINS", model.n_zones, ""),
        ("PSFNX", epsf.EPSF_SIZE, ""),
        ("PSFNY", epsf.EPSF_SIZE, ""),
        ("REFERENC", "doi", ""),
    ]
    primary = _primary("epsf", det.number, tag, cards)
    primary.header.add_comment("Combined ePSF bin product")
    mosaic = _image(epsf.mosaic(model), "EPSF_MOSAIC", None, np.float64)
    mosaic.header["GUTTER"] = 1
    return [primary, epsf.table_hdu(model), mosaic]


def _products(det: Detector) -> dict[str, list]:
    """The HDUs after PRIMARY of every product's current delivery."""
    cwave, cband = det.wave_images
    return {
        "l3_flux_corrections": [_image(det.l3_factors, "IMAGE", None)],
        "spectral_wcs": [_image(cwave, "CWAVE", "um"), _image(cband, "CBAND", "um")],
        "solid_angle_pixel_map": [_image(det.solid_angle, "IMAGE", "arcsec2")],
    }


def write_all(root: Path, dets: dict[int, Detector]) -> list[str]:
    """Write every QR3 product (and D3's first ePSF delivery) for every detector; returns their paths."""
    out = []
    for d, det in dets.items():
        files = {relpath(p, d): [_primary(p, d, current_tag(p, d)), *hdus] for p, hdus in _products(det).items()}
        for tag in dict.fromkeys([TAGS["epsf"], current_tag("epsf", d)]):
            files[relpath("epsf", d, tag)] = epsf_hdus(det, tag)
        for rel, hdus in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fits.HDUList(hdus).writeto(path, overwrite=True)
            out.append(rel)
    return out


def catalogue(dets: dict[int, Detector]) -> list[dict]:
    """The truth about the QR3 calibration tree: one row per file, and whether it is the current delivery."""
    rows = []
    for d in dets:
        for product, tag in TAGS.items():
            tags = dict.fromkeys([tag, current_tag(product, d)])
            rows += [{"product": product, "detector": d, "tag": t, "relpath": relpath(product, d, t),
                      "current": t == current_tag(product, d)} for t in tags]
    return rows
