"""Network realism for the simulated archive: latency, a shared bandwidth cap, seeded fault injection.

Faults are drawn per request from a hash of (seed, request identity, how many times that identical request
was seen before), so a pattern is reproducible whatever the order in which concurrent requests arrive, and
a retry of a failed request gets a fresh draw (it can succeed). `only` confines them to the paths a regex
matches (e.g. the calibration products), and `extname` to the byte ranges of the FITS HDUs a regex names
(e.g. the PSF cube of QR2 files, the EPSF table of R7 files), so one kind of request can be made to fail and
not the others. `job_error` makes asynchronous TAP jobs end in phase ERROR, drawn per job the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from astropy.io import fits

#: Fault kinds in the order their rates are stacked on [0, 1).
FAULT_KINDS = ("http500", "http503", "http429", "drop", "truncate", "stall", "stall_body")


@dataclass
class FaultConfig:
    """Per-request probabilities of each fault (their sum must be <= 1) and how they behave.

    - http500 / http503 / http429: an error status instead of the body (503 and 429 carry Retry-After);
    - drop: the connection is aborted after half of the body;
    - truncate: Content-Length announces the full body, half is sent, then the connection is closed;
    - stall: the server holds the response (not a byte) for `stall_s` seconds, then answers in full;
    - stall_body: the headers and half of the body are sent, then nothing for `stall_s` seconds, then the rest.
    `include_tap` applies them to the TAP endpoints too (default: file and cutout routes only); `only`, a
    regex searched in the request path, spares every path it does not match; `extname`, a regex matched
    against the EXTNAME of each HDU of a FITS file, spares every request whose bytes (its Range; the whole
    file without one) touch no HDU it matches. `job_error` is the probability that an asynchronous TAP job
    ends in phase ERROR instead of running its query (a retried job draws again).
    """

    http500: float = 0.0
    http503: float = 0.0
    http429: float = 0.0
    drop: float = 0.0
    truncate: float = 0.0
    stall: float = 0.0
    stall_body: float = 0.0
    retry_after: int = 1
    stall_s: float = 5.0
    include_tap: bool = False
    only: str | None = None
    extname: str | None = None
    job_error: float = 0.0

    def __post_init__(self) -> None:
        rates = [getattr(self, k) for k in FAULT_KINDS]
        if any(r < 0 for r in rates) or sum(rates) > 1.0 + 1e-12:
            given = dict(zip(FAULT_KINDS, rates, strict=True))
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {given}")
        if self.stall_s < 0:
            raise ValueError(f"stall_s must be >= 0, got {self.stall_s}")
        if not 0.0 <= self.job_error <= 1.0:
            raise ValueError(f"job_error must be in [0, 1], got {self.job_error}")
        for name in ("only", "extname"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name} must be a regular expression, got {value!r}: {exc}") from None

    def applies_to(self, path: str) -> bool:
        """Whether faults may fire on a request for `path` (the `only` filter; TAP is decided by the server)."""
        return self.only is None or re.search(self.only, path) is not None

    def touches_hdu(self, spans: list[tuple[str, int, int]], ranges: list[tuple[int, int]] | None) -> bool:
        """Whether a request for byte `ranges` ([(start, end_inclusive)]; None: the whole file) of a file whose
        HDUs span `spans` ([(EXTNAME, first byte, end)]) may get a fault under the `extname` filter."""
        if self.extname is None:
            return True
        hit = [(a, b) for name, a, b in spans if re.fullmatch(self.extname, name, flags=re.IGNORECASE)]
        if ranges is None:
            return bool(hit)
        return any(s < b and a <= e for a, b in hit for s, e in ranges)

    @classmethod
    def coerce(cls, value: FaultConfig | dict | None) -> FaultConfig:
        """A FaultConfig from None, an instance or a dict of its fields (e.g. {'http503': 0.1})."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown fault settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**value)


def hdu_spans(path: str | Path) -> list[tuple[str, int, int]]:
    """(EXTNAME, first byte, end) of each HDU of a FITS file, header and data; [] for a file that is no FITS.
    What `FaultConfig.touches_hdu` matches a request's byte ranges against."""
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            infos = [(h.name, h.fileinfo()) for h in hdul]
    except (OSError, ValueError):
        return []
    return [(name, i["hdrLoc"], i["datLoc"] + i["datSpan"]) for name, i in infos]


class FaultInjector:
    """Decides, per request, whether and which fault fires."""

    def __init__(self, config: FaultConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._seen: Counter[str] = Counter()
        #: How many times each fault kind ('job_error' included) fired.
        self.fired: Counter[str] = Counter()

    def draw(self, identity: str) -> str | None:
        """The fault kind for this request (None for a normal answer); `identity` names the request."""
        u = self._uniform(identity)
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self.config, kind)
            if u < edge:
                self.fired[kind] += 1
                return kind
        return None

    def job_fails(self, identity: str) -> bool:
        """Whether this asynchronous TAP job (`identity`: its query) ends in ERROR (`job_error`)."""
        fails = self.config.job_error > 0 and self._uniform(f"job|{identity}") < self.config.job_error
        self.fired["job_error"] += fails
        return fails

    def _uniform(self, identity: str) -> float:
        """A uniform draw in [0, 1) from (seed, identity, how many times that identity was drawn before)."""
        occurrence = self._seen[identity]
        self._seen[identity] += 1
        digest = hashlib.sha256(f"{self.seed}|{identity}|{occurrence}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


class Bandwidth:
    """A bandwidth cap shared by every response of one server (bytes/s; None = unlimited)."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s
        self._next_free = 0.0

    async def consume(self, nbytes: int) -> None:
        """Wait until `nbytes` more may be sent without exceeding the cap."""
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now, self._next_free)
        self._next_free = start + nbytes / self.rate
        delay = self._next_free - now
        if delay > 0:
            await asyncio.sleep(delay)
