"""The fetch strategies: range reads (full-width row strips, or the sources' boxes as row segments when the
server takes multi-range requests), IRSA cutouts, the whole file, and a local mirror read in place.

Each returns `(ImageRegion, source indices)` pairs holding exactly the pixels a local astropy read of the
same file gives (native-endian), plus the indices of the sources it could not serve. The PSF cube comes from
the process cache (`psfcache`): the detector's average_psf product or the file's own PSF HDU, read once;
the bytes a cutout or a whole file carries anyway fill that cache instead of a second read.
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from spxbatch.archive.io import ArchiveIO, IOStats, ReadError, maybe_gunzip
from spxbatch.archive.location import relative_to_root
from spxbatch.fetch.cache import CALIB_BLOCK_ROWS, CalibPlane, FetchCache, header_digest
from spxbatch.level2.constants import DETECTOR_NPIX, HDU_NAMES, PIXEL_SCALE_ARCSEC
from spxbatch.level2.fitsmap import FitsMap, FitsStructureError, scan_fits
from spxbatch.level2.naming import calibration_relpath
from spxbatch.level2.read import read_wave_table, region_from_hdul
from spxbatch.level2.region import ImageRegion, PSFCube, WaveTable, native
from spxbatch.level2.wcs import sky_to_parent_pixel

#: The four pixel planes read at the same rows.
PLANES = ("IMAGE", "FLAGS", "VARIANCE", "ZODI")
_PLANE_DTYPES = {"IMAGE": "f", "FLAGS": "i", "VARIANCE": "f", "ZODI": "f"}
#: Calibration pixels attached to regions: (product, extension, ImageRegion attribute).
CALIBRATION_PLANES = (
    ("solid_angle_pixel_map", "IMAGE", "solid_angle"),
    ("spectral_wcs", "CWAVE", "cwave"),
    ("spectral_wcs", "CBAND", "cband"),
)
#: One extra row/column around each neighbourhood: positions rounded differently never fall outside.
SAFETY_PX = 1

Regions = list[tuple[ImageRegion, np.ndarray]]
#: A rectangle of the parent frame to read, (x0, x1, y0, y1) with exclusive ends, and the sources it serves.
Box = tuple[int, int, int, int, np.ndarray]


@dataclass
class Target:
    """One image to fetch: where its bytes are, what it is, and where calibration products live."""

    path: str
    io: ArchiveIO
    stats: IOStats
    cache: FetchCache
    detector: int
    version: str
    release: str
    #: The archive's file root (IRSA's .../ibe/data/spherex/) the calibration products lie below, if known.
    calib_base: str | None
    size: int | None = None
    #: The parent frame's (ny, nx) before any header is read (plan columns naxis2/naxis1, else 2040).
    parent_shape: tuple[int, int] = (DETECTOR_NPIX, DETECTOR_NPIX)
    #: 'calibration' (the detector's average_psf cube, falling back to the file's) or 'file'.
    psf_source: str = "file"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_image(cls, image: Mapping, path: str, io: ArchiveIO, stats: IOStats,
                   cache: FetchCache) -> Target:
        """A Target from a plan images row and the path/URL its bytes are read from."""
        short = relative_to_root(str(image["relpath"]))  # 'qr2/level2/PERIOD/VERSION/DET/file.fits'
        parts = short.split("/")
        release = _text(image.get("release")) or parts[0]
        version = _text(image.get("version")) or (parts[3] if len(parts) > 3 else "")
        base = path[: len(path) - len(short)] if path.endswith(short) else None
        size = _positive_int(image.get("size_bytes"))
        shape = (_first(image, ("ny", "naxis2", "s_xel2")), _first(image, ("nx", "naxis1", "s_xel1")))
        return cls(path, io, stats, cache, int(image["detector"]), version, release, base, size, shape)

    def calibration_path(self, product: str) -> str | None:
        """Where this detector's calibration product lies beside the image (same archive, same root)."""
        if self.calib_base is None:
            return None
        return self.calib_base + relative_to_root(calibration_relpath(product, self.detector, self.release))

    def psf_cached(self) -> bool:
        """Whether this process already holds a PSF cube for this detector (and version, for file PSFs)."""
        index = self.cache.psf_index
        if self.psf_source == "calibration" and ("average_psf", self.detector, self.release) in index:
            return True
        return any(k[:3] == ("file", self.detector, self.version) for k in index)

    def read_ranges(self, ranges: list[tuple[int, int]], path: str | None = None,
                    size: int | None = None, fallback: bool = True) -> list[bytes]:
        return self.io.read_ranges(path or self.path, ranges, self.stats,
                                   size if path else (size or self.size), fallback=fallback)


def _positive_int(value) -> int | None:
    """A plan cell as a positive int; None for missing values (None, NaN, pd.NA) and non-numbers."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return int(v) if np.isfinite(v) and v > 0 else None


def _text(value) -> str:
    """A plan cell as text; '' for missing values (None, NaN, pd.NA)."""
    return value if isinstance(value, str) else ""


def _first(row: Mapping, keys: tuple[str, ...]) -> int:
    """The first positive integer among `keys` of a plan row (the frame size), else the full detector."""
    for key in keys:
        value = _positive_int(row.get(key))
        if value is not None:
            return value
    return DETECTOR_NPIX


# ------------------------------------------------------------------------------------------------ layout


def fitsmap_for(target: Target, path: str | None = None, size: int | None = None) -> FitsMap:
    """The offset table of the image (or of `path`), from the cache or by a header scan."""
    path = path or target.path
    fmap = target.cache.get_fitsmap(path)
    if fmap is None:
        if size is None:
            size = target.size if path == target.path else None
        if size is None:
            size = target.io.size(path, target.stats)
        fmap = scan_fits(lambda r: target.read_ranges(list(r), path, size), size, path)
        target.cache.put_fitsmap(fmap)
    return fmap


def check_level2(fmap: FitsMap) -> None:
    """Raise FitsStructureError unless the file has the 7 Level-2 HDUs with planes of one 2-D shape."""
    if fmap.names != HDU_NAMES:
        raise FitsStructureError(f"{fmap.url}: HDUs {fmap.names}, expected {HDU_NAMES}")
    shapes = {fmap[n].shape for n in PLANES}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise FitsStructureError(f"{fmap.url}: image planes have shapes {shapes}")
    for name, kind in _PLANE_DTYPES.items():
        if fmap[name].dtype.kind != kind or fmap[name].dtype.itemsize != 4:
            raise FitsStructureError(f"{fmap.url}: {name} has BITPIX {fmap[name].header['BITPIX']}")


def neighbourhoods(x: np.ndarray, y: np.ndarray, halfsize: int,
                   shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x lo, x hi, y lo, y hi, on-image mask): each source's pixel box (inclusive), clipped to the frame."""
    ny, nx = shape
    h = halfsize + SAFETY_PX
    with np.errstate(invalid="ignore"):
        xlo, xhi = np.floor(x) - h, np.ceil(x) + h
        ylo, yhi = np.floor(y) - h, np.ceil(y) + h
        ok = np.isfinite(x) & np.isfinite(y) & (xhi >= 0) & (xlo <= nx - 1) & (yhi >= 0) & (ylo <= ny - 1)
    clip = [np.clip(np.nan_to_num(a), 0, m - 1).astype(np.int64)
            for a, m in ((xlo, nx), (xhi, nx), (ylo, ny), (yhi, ny))]
    return clip[0], clip[1], clip[2], clip[3], ok


def plan_strips(ylo: np.ndarray, yhi: np.ndarray, ok: np.ndarray, merge_gap_rows: int, nx: int) -> list[Box]:
    """Full-width row strips covering every on-image source's rows; strips closer than the gap are merged."""
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(ylo[idx], kind="stable")]
    strips: list[tuple[int, int, list[int]]] = []
    for i in idx:
        lo, hi = int(ylo[i]), int(yhi[i]) + 1
        if strips and lo - strips[-1][1] <= merge_gap_rows:
            y0, y1, members = strips[-1]
            strips[-1] = (y0, max(y1, hi), [*members, i])
        else:
            strips.append((lo, hi, [i]))
    return [(0, nx, y0, y1, np.sort(np.asarray(m, dtype=np.int64))) for y0, y1, m in strips]


def plan_boxes(xlo: np.ndarray, xhi: np.ndarray, ylo: np.ndarray, yhi: np.ndarray, ok: np.ndarray) -> list[Box]:
    """One box per on-image source's neighbourhood; overlapping or touching boxes become their bounding box."""
    idx = np.flatnonzero(ok)
    b = np.column_stack([xlo[idx], xhi[idx] + 1, ylo[idx], yhi[idx] + 1]).astype(np.int64)
    members = [[int(i)] for i in idx]
    changed = True
    while changed and len(b) > 1:
        changed = False
        keep = np.ones(len(b), dtype=bool)
        for i in range(len(b)):
            if not keep[i]:
                continue
            hit = keep & (b[:, 0] <= b[i, 1]) & (b[i, 0] <= b[:, 1]) & (b[:, 2] <= b[i, 3]) & (b[i, 2] <= b[:, 3])
            hit[i] = False
            if hit.any():
                group = np.flatnonzero(hit)
                b[i] = [min(b[i, 0], b[group, 0].min()), max(b[i, 1], b[group, 1].max()),
                        min(b[i, 2], b[group, 2].min()), max(b[i, 3], b[group, 3].max())]
                for j in group:
                    members[i] += members[j]
                keep[group] = False
                changed = True
        b = b[keep]
        members = [m for m, k in zip(members, keep, strict=True) if k]
    order = np.lexsort((b[:, 0], b[:, 2])) if len(b) else []
    return [(int(b[k, 0]), int(b[k, 1]), int(b[k, 2]), int(b[k, 3]), np.sort(np.asarray(members[k], dtype=np.int64)))
            for k in order]


# ------------------------------------------------------------------------------------------------ PSF, wave


def image_psf(target: Target, entry_header: fits.Header, shape: tuple[int, ...], dtype: np.dtype,
              own_bytes: Callable[[], bytes], free: bool) -> PSFCube:
    """The image's PSF: its own header, the cube from the process cache.

    With `target.psf_source == 'calibration'` the cube is the detector's `average_psf` product (read once per
    detector and release); otherwise, or when that product is absent or of another shape, it is the file's own
    PSF HDU, cached by (detector, version, PSF header digest). `own_bytes` gives the file's raw cube bytes;
    `free` says they are already in hand (a whole file or cutout), so using them costs no read.
    """
    if target.psf_source == "calibration":
        try:
            cube = _calibration_psf(target)
        except ReadError as exc:
            cube = f"average_psf: unavailable ({exc.reason})"
        if isinstance(cube, str):
            target.notes.append(cube)
        elif cube.shape == tuple(shape):
            return PSFCube(cube=cube, header=entry_header)
        else:
            target.notes.append(f"average_psf: shape {cube.shape} != the file's {tuple(shape)}; file PSF used")
    cache = target.cache
    key = ("file", target.detector, target.version, header_digest(entry_header))
    if free and key not in cache.psf_index:
        cache.psf_index[key] = cache.add_psf_bytes(own_bytes(), dtype, shape)
    return PSFCube(cube=cache.psf_cube(key, own_bytes, dtype, shape), header=entry_header)


def psf_from_fitsmap(target: Target, fmap: FitsMap) -> PSFCube:
    """The PSF of a scanned file (a range read of its PSF HDU only if the cache has no cube for it)."""
    entry = fmap["PSF"]
    span = [(entry.data_offset, entry.data_offset + entry.data_size)]
    return image_psf(target, entry.header.copy(), entry.shape, entry.dtype,
                     lambda: target.read_ranges(span, fmap.url, fmap.size)[0], free=False)


def psf_from_hdu(target: Target, hdu: fits.ImageHDU) -> PSFCube:
    """The PSF of an opened whole file or cutout (its bytes came along: they fill the cache for free)."""
    big = np.dtype(hdu.data.dtype.newbyteorder(">"))
    return image_psf(target, hdu.header.copy(), hdu.data.shape, big,
                     lambda: hdu.data.astype(big).tobytes(), free=True)


def _calibration_psf(target: Target) -> np.ndarray | str:
    """The average_psf cube of the target's detector, or why it is unavailable."""
    fmap = _calibration_map(target, "average_psf")
    if isinstance(fmap, str):
        return fmap
    entry = next((h for h in fmap.hdus if len(h.shape) == 3), None)
    if entry is None:
        return "average_psf: no 3-D PSF extension"
    span = [(entry.data_offset, entry.data_offset + entry.data_size)]
    key = ("average_psf", target.detector, target.release)
    return target.cache.psf_cube(key, lambda: target.read_ranges(span, fmap.url, fmap.size)[0],
                                 entry.dtype, entry.shape)


def wave_from_fitsmap(target: Target, fmap: FitsMap) -> WaveTable:
    """The WCS-WAVE table, from the bytes the header scan kept or one small range read."""
    entry = fmap["WCS-WAVE"]
    data = fmap.small.get(entry.index)
    if data is None:
        data = target.read_ranges([(entry.data_offset, entry.data_offset + entry.data_size)],
                                  fmap.url, fmap.size)[0]
    return read_wave_table(fmap.hdu_from_bytes("WCS-WAVE", data))


# ------------------------------------------------------------------------------------------------ calibration


def attach_calibration(target: Target, regions: Regions) -> None:
    """Fill solid_angle / cwave / cband of each region from the calibration products, when present."""
    for product, extname, attr in CALIBRATION_PLANES:
        plane = _calib_plane(target, product, extname)
        if isinstance(plane, str):
            target.notes.append(plane)
            continue
        if plane.shape != tuple(regions[0][0].parent_shape):
            target.notes.append(f"{product}/{extname}: shape {plane.shape} != image {regions[0][0].parent_shape}")
            continue
        try:
            pixels = [plane.rows(r.y0, r.y0 + r.shape[0])[:, r.x0:r.x0 + r.shape[1]] for r, _ in regions]
        except ReadError as exc:  # transient: this image goes without; the next one tries again
            target.notes.append(f"{product}: unavailable ({exc.reason})")
            continue
        for (region, _), values in zip(regions, pixels, strict=True):
            setattr(region, attr, values)


def _calibration_map(target: Target, product: str) -> FitsMap | str:
    """The offset table of this detector's calibration product, or why it is unavailable.

    Absent files (4xx) and broken ones are remembered for the process; transient failures are not.
    """
    key = (product, target.detector, target.release)
    known = target.cache.calib.get(key)
    if known is not None:
        return known
    path = target.calibration_path(product)
    if path is None:
        return f"{product}: no calibration location for {target.path}"
    try:
        fmap: FitsMap | str = fitsmap_for(target, path)
    except ReadError as exc:
        if exc.status is None or not 400 <= exc.status < 500:
            return f"{product}: unavailable ({exc.reason})"
        fmap = f"{product}: absent ({exc.reason})"
    except FitsStructureError as exc:
        fmap = f"{product}: bad file ({exc})"
    target.cache.calib[key] = fmap
    return fmap


def _calib_plane(target: Target, product: str, extname: str) -> CalibPlane | str:
    """The lazily read calibration plane (cached per process), or why it is unavailable."""
    key = (product, target.detector, target.release, extname)
    cached = target.cache.calib.get(key)
    if cached is not None:
        return cached
    fmap = _calibration_map(target, product)
    if isinstance(fmap, str):
        return fmap
    if extname not in fmap or len(fmap[extname].shape) != 2 or 0 in fmap[extname].shape:
        target.cache.calib[key] = f"{product}: no non-empty {extname} extension"
        return target.cache.calib[key]
    entry = fmap[extname]
    ny, nx = entry.shape

    def read_blocks(blocks: list[int]) -> list[np.ndarray]:
        """The blocks' rows; runs of consecutive blocks are read as one range."""
        runs: list[list[int]] = []
        for b in sorted(blocks):
            if runs and b == runs[-1][-1] + 1:
                runs[-1].append(b)
            else:
                runs.append([b])
        spans = [(run[0] * CALIB_BLOCK_ROWS, min(ny, (run[-1] + 1) * CALIB_BLOCK_ROWS)) for run in runs]
        blobs = target.read_ranges([fmap.row_range(extname, y0, y1) for y0, y1 in spans], fmap.url, fmap.size)
        rows = {}
        for run, blob, (y0, y1) in zip(runs, blobs, spans, strict=True):
            arr = native(np.frombuffer(blob, dtype=entry.dtype).reshape(y1 - y0, nx))
            for b in run:
                rows[b] = arr[(b - run[0]) * CALIB_BLOCK_ROWS:(b - run[0] + 1) * CALIB_BLOCK_ROWS]
        return [rows[b] for b in blocks]

    plane = CalibPlane(fmap.url, (ny, nx), read_blocks)
    target.cache.calib[key] = plane
    return plane


# ------------------------------------------------------------------------------------------------ strategies


def fetch_boxes(target: Target, fmap: FitsMap, boxes: list[Box], fallback: bool = True) -> Regions:
    """Range reads of the four planes in each box: one range per plane for full-width boxes (strips), one
    per row and plane otherwise (which needs multi-range requests: with `fallback=False` a server refusing
    them raises MultiRangeUnsupported instead of being sent one request per row)."""
    if not boxes:
        return []
    ny, nx = fmap["IMAGE"].shape
    ranges: list[tuple[int, int]] = []
    for x0, x1, y0, y1, _ in boxes:
        for name in PLANES:
            start, end = fmap.row_range(name, y0, y1)
            if x1 - x0 == nx:
                ranges.append((start, end))
            else:
                row = nx * 4
                ranges.extend((start + k * row + x0 * 4, start + k * row + x1 * 4) for k in range(y1 - y0))
    blobs = iter(target.read_ranges(ranges, fmap.url, fmap.size, fallback=fallback))
    psf = psf_from_fitsmap(target, fmap)
    wave = wave_from_fitsmap(target, fmap)
    primary, image_h, flags_h = (fmap[n].header.copy() for n in ("PRIMARY", "IMAGE", "FLAGS"))
    regions: Regions = []
    for x0, x1, y0, y1, members in boxes:
        planes = {}
        for name in PLANES:
            raw = next(blobs) if x1 - x0 == nx else b"".join(next(blobs) for _ in range(y1 - y0))
            planes[name] = native(np.frombuffer(raw, dtype=fmap[name].dtype).reshape(y1 - y0, x1 - x0))
        region = ImageRegion(
            primary_header=primary, image_header=image_h, flags_header=flags_h,
            image=planes["IMAGE"], flags=planes["FLAGS"], variance=planes["VARIANCE"], zodi=planes["ZODI"],
            x0=x0, y0=y0, wave=wave, psf=psf, parent_shape=(ny, nx),
        )
        regions.append((region, members))
    return regions


def box_parts(boxes: list[Box], nx: int) -> int:
    """How many byte ranges `fetch_boxes` asks for."""
    return sum(len(PLANES) * (1 if x1 - x0 == nx else y1 - y0) for x0, x1, y0, y1, _ in boxes)


def open_level2(data: bytes, what: str) -> fits.HDUList:
    """An HDUList over bytes (gunzipped when needed), checked to hold the 7 Level-2 HDUs."""
    hdul = fits.open(_io.BytesIO(maybe_gunzip(data)), memmap=False)
    names = tuple(str(h.name).upper() for h in hdul)
    if names != HDU_NAMES:
        hdul.close()
        raise FitsStructureError(f"{what}: HDUs {names}, expected {HDU_NAMES}")
    return hdul


def fetch_whole(target: Target, ra: np.ndarray, dec: np.ndarray, halfsize: int) -> tuple[Regions, np.ndarray]:
    """One GET of the whole file: one full-frame region serving every source on the image."""
    data = target.io.read_whole(target.path, target.stats, expected_size=target.size)
    with open_level2(data, target.path) as hdul:
        region = region_from_hdul(hdul, with_psf=False)
        region.psf = psf_from_hdu(target, hdul["PSF"])
    x, y = sky_to_parent_pixel(region.image_header, ra, dec)
    *_, ok = neighbourhoods(x, y, halfsize, region.shape)
    return [(region, np.flatnonzero(ok))], np.flatnonzero(~ok)


def cutout_url(url: str, ra: float, dec: float, size_px: int, gzip: bool) -> str:
    """IRSA's cutout query string on a file URL (sky centre in degrees, square size in pixels)."""
    return f"{url}?center={ra:.8f},{dec:.8f}&size={size_px}px" + ("" if gzip else "&gzip=false")


def group_on_sky(ra: np.ndarray, dec: np.ndarray, max_span_px: float) -> list[np.ndarray]:
    """Groups of sources whose tangent-plane box is at most `max_span_px` native pixels wide: the occupied
    cells of a grid of that pitch (vectorised; a greedy merge was quadratic in the number of sources)."""
    if ra.size == 0:
        return []
    ra0, dec0 = np.deg2rad(np.mean(ra)), np.deg2rad(np.mean(dec))
    r, d = np.deg2rad(ra), np.deg2rad(dec)
    cosc = np.sin(dec0) * np.sin(d) + np.cos(dec0) * np.cos(d) * np.cos(r - ra0)
    scale = np.rad2deg(1.0) * 3600.0 / PIXEL_SCALE_ARCSEC
    u = np.cos(d) * np.sin(r - ra0) / cosc * scale
    v = (np.cos(dec0) * np.sin(d) - np.sin(dec0) * np.cos(d) * np.cos(r - ra0)) / cosc * scale
    pitch = max(float(max_span_px), 1e-9)
    cells = np.stack([np.floor((u - u.min()) / pitch), np.floor((v - v.min()) / pitch)], axis=1)
    _, cell_of = np.unique(cells, axis=0, return_inverse=True)
    order = np.argsort(cell_of.ravel(), kind="stable")
    bounds = np.flatnonzero(np.diff(cell_of.ravel()[order])) + 1
    return [np.sort(g).astype(np.int64) for g in np.split(order, bounds)]


def cutout_requests(path: str, ra: np.ndarray, dec: np.ndarray, halfsize: int, group_px: int, margin_px: int,
                    gzip: bool) -> tuple[list[np.ndarray], list[str], list[int]]:
    """The tight groups of sources (indices into ra/dec) that share one cutout, each group's cutout URL and
    side (px), sized so that every member's `halfsize` neighbourhood fits (for fetching and `spxbatch stage`)."""
    groups = group_on_sky(ra, dec, group_px)
    urls, sizes = [], []
    for g in groups:
        size_px = int(np.ceil(_sky_span_px(ra[g], dec[g]))) + 2 * (halfsize + SAFETY_PX + margin_px) + 1
        c_ra, c_dec = _sky_centre(ra[g], dec[g])
        urls.append(cutout_url(path, c_ra, c_dec, size_px, gzip))
        sizes.append(size_px)
    return groups, urls, sizes


def cutout_bytes(fmap: FitsMap, size_px: int) -> int:
    """About how many bytes one square cutout of side `size_px` of a scanned file is (IRSA's cutouts carry
    every header, the whole PSF cube and the WCS-WAVE table with the four trimmed planes)."""
    headers = sum(h.data_offset - h.header_offset for h in fmap.hdus)
    return headers + fmap["PSF"].data_size + fmap["WCS-WAVE"].data_size + len(PLANES) * 4 * size_px * size_px


def cutout_region(target: Target, data: bytes, what: str, parent_shape: tuple[int, int]) -> ImageRegion:
    """The region of one cutout file's bytes, placed in the parent frame by its CRPIXnA cards."""
    with open_level2(data, what) as hdul:
        region = region_from_hdul(hdul, parent_shape=parent_shape, with_psf=False)
        region.psf = psf_from_hdu(target, hdul["PSF"])
    return region


def inside_region(region: ImageRegion, ra: np.ndarray, dec: np.ndarray, halfsize: int) -> np.ndarray:
    """Mask of the sources whose whole neighbourhood lies inside the region (so it can measure them)."""
    x, y = sky_to_parent_pixel(region.image_header, ra, dec)
    xlo, xhi, ylo, yhi, ok = neighbourhoods(x, y, halfsize, region.parent_shape)
    ny, nx = region.shape
    return ok & (xlo >= region.x0) & (xhi < region.x0 + nx) & (ylo >= region.y0) & (yhi < region.y0 + ny)


def fetch_cutouts(target: Target, ra: np.ndarray, dec: np.ndarray, halfsize: int, parent_shape: tuple[int, int],
                  group_px: int, margin_px: int, gzip: bool) -> tuple[Regions, np.ndarray, list[str]]:
    """IRSA cutouts, one per tight group of sources, fetched concurrently; origin from CRPIXnA.

    Returns the regions, the sources no cutout covered, and the errors of failed cutouts.
    """
    groups, urls, _ = cutout_requests(target.path, ra, dec, halfsize, group_px, margin_px, gzip)
    results = target.io.read_many(urls, target.stats)
    regions: Regions = []
    missing: list[np.ndarray] = []
    errors: list[str] = []
    for g, url, res in zip(groups, urls, results, strict=True):
        if isinstance(res, ReadError):
            missing.append(g)
            if res.status != 400:  # 400 = no overlap with the image: not an error, just nothing there
                errors.append(str(res))
            continue
        try:
            region = cutout_region(target, res, url, parent_shape)
        except (FitsStructureError, OSError, ValueError) as exc:
            missing.append(g)
            errors.append(f"{url}: {exc}")
            continue
        inside = inside_region(region, ra[g], dec[g], halfsize)
        if inside.any():
            regions.append((region, g[inside]))
        missing.append(g[~inside])
    left = np.sort(np.concatenate(missing)) if missing else np.empty(0, dtype=np.int64)
    return regions, left, errors


def read_local_cutouts(target: Target, paths: list[str], ra: np.ndarray, dec: np.ndarray, halfsize: int,
                       parent_shape: tuple[int, int]) -> tuple[Regions, np.ndarray, list[str]]:
    """The cutout files of one image in a local mirror (`spxbatch stage --fetch cutout`): each source is
    measured on the first cutout that holds its whole neighbourhood. Returns regions, unserved sources and
    the errors of unreadable files."""
    todo = np.arange(ra.size)
    regions: Regions = []
    errors: list[str] = []
    for path, res in zip(paths, target.io.read_many(paths, target.stats), strict=True):
        if not todo.size:
            break
        try:
            if isinstance(res, ReadError):
                raise res
            region = cutout_region(target, res, path, parent_shape)
        except (FitsStructureError, OSError, ValueError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        inside = inside_region(region, ra[todo], dec[todo], halfsize)
        if inside.any():
            regions.append((region, todo[inside]))
            todo = todo[~inside]
    return regions, todo, errors


def _sky_span_px(ra: np.ndarray, dec: np.ndarray) -> float:
    """Largest separation (native pixels) from the group centre, doubled: the box side the group needs."""
    c_ra, c_dec = _sky_centre(ra, dec)
    d = np.deg2rad
    cos_sep = np.sin(d(dec)) * np.sin(d(c_dec)) + np.cos(d(dec)) * np.cos(d(c_dec)) * np.cos(d(ra - c_ra))
    sep_arcsec = np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1))) * 3600.0
    return 2.0 * float(sep_arcsec.max()) / PIXEL_SCALE_ARCSEC


def _sky_centre(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Mean direction of the positions (deg), robust to RA wrap-around."""
    r, d = np.deg2rad(ra), np.deg2rad(dec)
    v = np.array([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]).sum(axis=1)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))
