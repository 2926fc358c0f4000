"""How to fetch: the strategies, the retry policy, the network the cost model assumes, cutout and PSF choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from spxbatch.archive.io import RetryPolicy
from spxbatch.fetch.cost import Link

#: 'local' is not asked for: a file below a local mirror root is always read in place.
STRATEGIES = ("auto", "range", "cutout", "whole", "local")


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: the retry policy, the network the cost model assumes, cutout and calibration choices."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Round-trip latency (s) and bandwidth (bytes/s) the cost model assumes.
    latency_s: float = 0.05
    bandwidth_bps: float = 25e6
    #: Fixed CPU cost of measuring one region (WCS, headers, set-up: ~20 ms measured), charged per region, so
    #: that many small boxes do not win over a few strips or the whole file on dense fields.
    region_overhead_s: float = 0.02
    #: Server time per cutout (IRSA: 1-2 s each), charged by the cost model.
    cutout_service_s: float = 1.5
    #: Sources within this many pixels share one cutout; extra pixels around each cutout.
    cutout_group_px: int = 32
    cutout_margin_px: int = 2
    #: Ask for gzipped cutouts (IRSA's default); the body is gunzipped either way.
    cutout_gzip: bool = False
    #: Strips closer than this many rows are merged (None: latency x bandwidth when each range is one
    #: request; 0, i.e. only touching strips, with multi-range requests or a local file).
    merge_gap_rows: int | None = None
    #: Attach the solid-angle and CWAVE/CBAND calibration pixels when the archive has them.
    calibration: bool = True
    #: Where PSF models come from: 'file' (default: each file's own PSF cube or EPSF table, read once per
    #: detector, version and PSF header, whose DATASUM changes with the cube, so a second cube under one
    #: version is caught), 'calibration' (QR2 files: the detector's average_psf product, once per detector;
    #: the file's own when absent) or 'epsf' (QR2 files: QR3's R7 ePSF calibration product of the detector,
    #: as IRSA advises; the file's own cube when absent). R7 files always use their own EPSF table.
    psf_source: str = "file"
    #: Multiply QR2-processed images by QR3's l3_flux_corrections (IMAGE x factor, VARIANCE x factor^2,
    #: ZODI untouched), as IRSA advises when combining them with R7 data; R7 files are never corrected.
    l3_flux_correction: bool = False
    #: Pack each call's byte ranges into multi-range HTTP requests (falls back by itself when unsupported).
    multirange: bool = True
    #: With multi-range requests, let the range strategy read only the sources' boxes (one byte range per
    #: row and plane) instead of full-width strips when the cost model says it is cheaper.
    boxes: bool = True
    #: The persistent cache of PSF models and calibration pixels that runs share (`fetch.store`): 'auto'
    #: ($SPXBATCH_CACHE_DIR, else $XDG_CACHE_HOME/spxbatch/products, else ~/.cache/spxbatch/products), a
    #: folder, or 'none' (off); and the most it may hold, in GB.
    cache_dir: str = "auto"
    cache_max_gb: float = 4.0
    #: Images a measuring task fetches at once (threads; their photometry stays one at a time): enough to keep
    #: the link busy through each image's chain of dependent round trips.
    images_in_flight: int = 4
    #: Requests of one process's pixel reads (range plans) in flight at once, shared by its images first come,
    #: first served: enough to fill the link (a box read's requests carry ~25 kB of row segments: 64 of them
    #: hold a 50 ms x 20 MB/s link's 1 MB in flight), and an image's pixels arrive before the next one's, so
    #: each is measured while the next arrives (images read side by side all arrive at the end, together).
    pixel_requests_in_flight: int = 64
    #: Images fetched over the link at once, set by the run (its workers x their images in flight, at most
    #: the run's images): the cost model gives each image that share of the bandwidth.
    link_sharers: int = 1
    #: A local mirror root: when set, image relpaths are read in place below it (no server).
    file_root: str | None = None

    def request_bytes(self) -> float:
        """The per-request overhead expressed in bytes: latency x one image's share of the bandwidth (the
        bandwidth-delay product of that share)."""
        return self.latency_s * self.link().share_bps

    def link(self) -> Link:
        """The network and CPU the cost model assumes, as plain numbers."""
        return Link(latency_s=self.latency_s, bandwidth_bps=self.bandwidth_bps,
                    concurrency=self.retry.concurrency, region_overhead_s=self.region_overhead_s,
                    cutout_service_s=self.cutout_service_s, sharers=self.link_sharers)
