"""The sub-configs of a run defined here (`PlanConfig`, `ClusterConfig`) and the check of one entry of any
table of the run config: its type hint, range, choices and format (band names, time ranges, job counts,
scheduler addresses); the ranges of the photometry options and the flag names they list too, so every origin
gets the same checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from spxbatch.archive.retry import RetryPolicy
from spxbatch.errors import ConfigError
from spxbatch.fetch.options import FetchOptions
from spxbatch.level2.constants import BANDS
from spxbatch.level2.flags import KNOWN_FLAG_NAMES
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.pipeline.validation import Bound, field_types, known_names, typed_value


def parse_jobs(jobs: str) -> tuple[int, int | None]:
    """'2' -> (2, None): a fixed number of jobs; '1:4' -> (1, 4): adaptive between 1 and 4 jobs."""
    try:
        if ":" in str(jobs):
            lo, hi = (int(v) for v in str(jobs).split(":", 1))
            if not 0 <= lo <= hi or hi == 0:
                raise ValueError
            return lo, hi
        n = int(jobs)
        if n < 1:
            raise ValueError
        return n, None
    except ValueError:
        raise ConfigError(f"--jobs takes a count like 2 or an adaptive range like 1:4, not {jobs!r}") from None


def band_number(value: int | str) -> int:
    """1..6 from 3, '3', 'D3' or 'SPHEREx-D3'."""
    text = str(value).strip().upper().removeprefix("SPHEREX-").removeprefix("D")
    if isinstance(value, bool) or not text.isdigit() or int(text) not in BANDS:
        raise ConfigError(f"bands are 1..6 or D1..D6, not {value!r}")
    return int(text)


def _checked_in_place(obj: Any, where: str) -> None:
    """Convert and check every field of a frozen sub-config in place (from its __post_init__)."""
    for name in field_types(type(obj)):
        object.__setattr__(obj, name, entry_value(type(obj), name, getattr(obj, name), f"{where}.{name}"))


@dataclass(frozen=True)
class PlanConfig:
    """What to plan: the catalog's columns, which images (bands, times, collections, releases), and where
    planning queries go."""

    #: Catalog column names (None: found under the usual spellings).
    name_col: str | None = None
    ra_col: str | None = None
    dec_col: str | None = None
    #: Bands to measure (1..6; 'D3' is read as 3); empty: all.
    bands: tuple[int, ...] = ()
    #: (mjd_min, mjd_max): images whose exposure overlaps it; None (or [] in a file): all times.
    time_range: tuple[float, float] | None = None
    #: Collections, e.g. ('spherex_qr2',) (wide) or ('spherex_qr2_deep',); empty: all.
    collections: tuple[str, ...] = ()
    #: Releases, e.g. ('qr2',); empty: all.
    releases: tuple[str, ...] = ()
    #: Where planning queries go when not the archive's own TAP (e.g. an S3 mirror planned by IRSA's or a
    #: private TAP service); None: the archive's.
    tap_url: str | None = None
    #: How planning queries run: 'sync' (one request each) or 'async' (UWS jobs, which IRSA advises for
    #: long queries; a job that ends in ERROR is retried like a failed request).
    tap_mode: Literal["sync", "async"] = "sync"

    def __post_init__(self) -> None:
        _checked_in_place(self, "plan")


@dataclass(frozen=True)
class ClusterConfig:
    """Where the Dask workers come from: a local cluster, an existing scheduler, or SLURM/PBS jobs."""

    #: None: a LocalCluster on this machine; 'slurm' or 'pbs': dask-jobqueue.
    kind: str | None = None
    #: Address of an existing scheduler (tcp://host:port); overrides `kind`.
    scheduler: str | None = None
    #: Local worker processes (None: one per core).
    workers: int | None = None
    #: Number of batch jobs, '2', or an adaptive range '1:4'.
    jobs: str = "1"
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = 1
    #: Worker processes per job (None: one single-threaded process per core, since SEP holds the GIL).
    processes: int | None = None
    memory: str = "4GB"
    #: Extra scheduler directives, e.g. ('--constraint=cpu',).
    job_extra: tuple[str, ...] = ()
    #: Python executable on the compute nodes (default: this interpreter).
    python: str | None = None
    #: Directory for job logs.
    log_directory: str | None = None
    #: A run on this machine whose worker count was not chosen (`workers` unset), planned to at most this many
    #: images and `in_process_max_pairs` (source, image) pairs, is measured in this process: starting worker
    #: processes would cost more than they save (0: always start them).
    in_process_max_images: int = 8
    in_process_max_pairs: int = 20_000

    def __post_init__(self) -> None:
        _checked_in_place(self, "cluster")


#: Ranges of numeric entries, by (sub-config class, field).
BOUNDS: dict[tuple[type, str], Bound] = {
    **{(RetryPolicy, name): Bound(low) for name, low in (("max_attempts", 1), ("backoff_s", 0),
                                                         ("max_backoff_s", 0), ("max_retry_after_s", 0),
                                                         ("concurrency", 1))},
    (RetryPolicy, "attempt_timeout_s"): Bound(0, strict=True),
    (RetryPolicy, "stall_timeout_s"): Bound(0, strict=True),
    **{(ClusterConfig, name): Bound(1) for name in ("workers", "cores", "processes")},
    **{(ClusterConfig, name): Bound(0) for name in ("in_process_max_images", "in_process_max_pairs")},
    **{(FetchOptions, name): Bound(0) for name in ("latency_s", "region_overhead_s", "cutout_service_s",
                                                   "cutout_margin_px", "merge_gap_rows")},
    (FetchOptions, "bandwidth_bps"): Bound(0, strict=True),
    (FetchOptions, "cache_max_gb"): Bound(0, strict=True),
    (FetchOptions, "cutout_group_px"): Bound(1),
    (FetchOptions, "images_in_flight"): Bound(1),
    (FetchOptions, "pixel_requests_in_flight"): Bound(1),
}
#: Ranges of the photometry options that PhotometryConfig does not check itself.
PHOTOMETRY_BOUNDS: dict[str, Bound] = {
    **{name: Bound(0, strict=True) for name in ("fwhm_multiplier", "fallback_fwhm", "annulus_area",
                                                "annulus_max_outer", "clip_sigma", "background_error_factor",
                                                "zodi_max_scale")},
    **{name: Bound(0) for name in ("annulus_gap", "window_gap", "clip_iters", "neighbour_mask_radius",
                                   "zodi_halfsize", "variance_repair_halfsize", "min_edge_distance")},
    **{name: Bound(1) for name in ("window_halfsize", "global_mesh")},
    "zodi_min_fraction": Bound(0, high=1),
}
#: Photometry options that list FLAGS names (resolved through each file's cards when measuring).
FLAG_NAME_OPTIONS = frozenset({"bad_flags", "background_avoid_flags", "extra_disqualifying_flags"})
#: An http(s) URL with a host.
_HTTP_URL = re.compile(r"^https?://[^\s/]+")
#: A Dask scheduler address: an optional protocol, a host, a port.
_SCHEDULER_ADDRESS = re.compile(r"^([a-z]+://)?(\[[0-9a-fA-F:]+\]|[^\s:/\[\]]+):\d{1,5}$")
#: Allowed values of string entries whose type hint does not list them.
CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (ClusterConfig, "kind"): ("slurm", "pbs"),
    (FetchOptions, "psf_source"): ("file", "calibration", "epsf"),
}


def entry_value(cls: type, name: str, value: Any, label: str) -> Any:
    """One entry of a sub-config, converted and checked (type hint, range, choices, format); a ConfigError
    naming `label` (e.g. 'config file: cluster.jobs') otherwise."""
    if cls is PlanConfig and name == "bands" and isinstance(value, list | tuple):
        try:
            value = tuple(band_number(b) for b in value)  # 'D3' -> 3
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    if cls is PlanConfig and name == "time_range" and isinstance(value, list | tuple) and not value:
        value = None  # [] in a file: all times
    if cls is ClusterConfig and name == "jobs" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `jobs = 2` in a TOML file
    out = typed_value(field_types(cls)[name], value, label, BOUNDS.get((cls, name)), CHOICES.get((cls, name)))
    if cls is PlanConfig and name == "time_range" and out is not None and out[0] > out[1]:
        raise ConfigError(f"{label}: MJD_MIN {out[0]:g} is after MJD_MAX {out[1]:g}")
    if cls is PlanConfig and name == "tap_url" and out is not None and not _HTTP_URL.match(out):
        raise ConfigError(f"{label} must be an http(s) URL of a TAP service like https://host/TAP, not {out!r}")
    if cls is ClusterConfig and name == "scheduler" and out is not None and not _SCHEDULER_ADDRESS.match(out):
        raise ConfigError(f"{label} must be a Dask scheduler address like tcp://host:8786, not {out!r}")
    if cls is ClusterConfig and name == "jobs":
        try:
            parse_jobs(out)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
    return out


def photometry_value(name: str, value: Any, label: str) -> Any:
    """One photometry option checked against PhotometryConfig's type hint and PHOTOMETRY_BOUNDS ('preset' is
    a string), and the options that name FLAGS bits against the flag names the code knows; a ConfigError
    naming `label` otherwise."""
    out = typed_value(field_types(PhotometryConfig).get(name, str), value, label, PHOTOMETRY_BOUNDS.get(name))
    if name in FLAG_NAME_OPTIONS:
        known_names(out, KNOWN_FLAG_NAMES, label, "flag name")
    return out
