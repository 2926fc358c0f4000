"""The cost model that picks a fetch strategy: estimated seconds from plain numbers (bytes, requests, regions).

time = ceil(requests / concurrency) x (latency + service time) + bytes / (bandwidth / sharers) + regions x the
fixed CPU cost of measuring one region. The service time is IRSA's 1-2 s per cutout; the per-region cost keeps
many small boxes from winning over a few strips or the whole file on dense fields.

`sharers` is how many images are fetched over the link at once (a run's workers x their images in flight):
each image gets that share of the bandwidth, while its own concurrent requests still overlap their latency.
Priced alone, an image of ~100 sources reads 27-row strips (50 MB in 43 requests) rather than its boxes
(9 MB in 263 requests); on a link shared by 8 images the strips' bytes cost 8 times more and the boxes win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Bytes of multipart headers that come with each part of a multi-range response.
PART_OVERHEAD_BYTES = 100


@dataclass(frozen=True)
class Link:
    """The network and CPU the cost model assumes."""

    latency_s: float
    bandwidth_bps: float
    #: Requests in flight at once.
    concurrency: int
    region_overhead_s: float
    cutout_service_s: float
    #: Images fetched over the link at once: each has 1/sharers of the bandwidth.
    sharers: int = 1

    @property
    def share_bps(self) -> float:
        """The bandwidth one image's reads get."""
        return self.bandwidth_bps / max(1, self.sharers)


@dataclass(frozen=True)
class Reads:
    """What one strategy reads for an image: bytes, requests, and regions to measure."""

    nbytes: int
    requests: int
    regions: int

    def __add__(self, other: Reads) -> Reads:
        return Reads(self.nbytes + other.nbytes, self.requests + other.requests, self.regions + other.regions)


def seconds(link: Link, reads: Reads, service_s: float = 0.0) -> float:
    """The estimated wall time of `reads` (each round of concurrent requests also waits `service_s`)."""
    rounds = math.ceil(reads.requests / max(1, link.concurrency))
    return (rounds * (link.latency_s + service_s) + reads.nbytes / link.share_bps
            + reads.regions * link.region_overhead_s)


def estimate_costs(link: Link, *, strips: Reads, whole_bytes: int, psf: Reads, boxes: Reads | None = None,
                   cutouts: Reads | None = None) -> dict[str, float]:
    """Seconds of each strategy for one image (its header scan already paid): 'range' (full-width strips),
    'whole' (one GET), 'range-boxes' and 'cutout' when given. `psf` is the PSF cube read that range reads
    add when this process does not hold the cube yet (zero otherwise); a cutout or the whole file carries it.
    """
    out = {"range": seconds(link, strips + psf), "whole": seconds(link, Reads(whole_bytes, 1, 1))}
    if boxes is not None:
        out["range-boxes"] = seconds(link, boxes + psf)
    if cutouts is not None:
        out["cutout"] = seconds(link, cutouts, link.cutout_service_s)
    return out


def cutout_bytes(fixed_bytes: int, side_px: int, n_planes: int, itemsize: int) -> int:
    """About how many bytes one square cutout of side `side_px` is: what every cutout carries whole (headers,
    PSF, wavelength table) plus its trimmed planes."""
    return fixed_bytes + n_planes * itemsize * side_px * side_px
