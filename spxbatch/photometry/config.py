"""Every photometry option in one typed dataclass, with spxbatch defaults and an SPXQuery-compatible preset.

Defaults fix SPXQuery's documented defects (tiny annulus, no aperture correction, cutout-dependent zodi
scale); `PhotometryConfig.spxquery()` reproduces SPXQuery's own settings where they are expressible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from spxbatch.errors import ConfigError
from spxbatch.level2.constants import DEFAULT_BAD_FLAGS
from spxbatch.photometry.conditions import CONDITION_BITS


@dataclass(frozen=True)
class PhotometryConfig:
    """Options of forced aperture and PSF photometry on one Level-2 image (all radii in native pixels)."""

    #: 'fwhm': radius = fwhm_multiplier * FWHM / 2 with FWHM from the PSF zone of the source (SPXQuery
    #: default, diameter = 2.5 FWHM); 'fixed': radius = fixed_radius.
    aperture: Literal["fwhm", "fixed"] = "fwhm"
    #: Aperture radius for 'fixed' (SPXQuery: diameter 3.0 px -> 1.5).
    fixed_radius: float = 1.5
    #: Aperture DIAMETER in units of the FWHM for 'fwhm' (SPXQuery: 2.5).
    fwhm_multiplier: float = 2.5
    #: FWHM (px) used when the region carries no PSF cube (PSF_FWHM 5.22" / 6.15"/px ~ 0.85 is too
    #: optimistic for the binned PSF; 2.0 px is the typical measured value).
    fallback_fwhm: float = 2.0
    #: Upper bound of any aperture radius (px). It bounds the neighbourhood a measurement reads, so it
    #: must hold even when the PSF is unknown; larger FWHM-based radii are clipped to it.
    max_aperture_radius: float = 4.0

    #: Local background: 'annulus' (SPXQuery default), 'window' (box around the source minus the
    #: aperture), 'global' (a sep.Background map of the region: NOT region-independent) or 'none'.
    background: Literal["annulus", "window", "global", "none"] = "annulus"
    #: Annulus inner radius = aperture radius + this gap (SPXQuery: 1.414).
    annulus_gap: float = 1.414
    #: Annulus outer radius = sqrt(annulus_area/pi + r_in^2) (SPXQuery: 10 px^2, i.e. ~10 pixels; ours:
    #: 60 px^2, so the background error does not dominate the flux error).
    annulus_area: float = 60.0
    #: Cap on the initial outer radius before widening (SPXQuery: 5.0, which leaves no annulus for
    #: apertures wider than 7.2 px; None = no cap).
    annulus_max_outer: float | None = None
    #: Widening when too few usable pixels: step (px) and number of steps (SPXQuery: 0.5, 5).
    annulus_step: float = 0.5
    annulus_steps: int = 5
    #: Minimum usable background pixels (SPXQuery: 10).
    background_min_pixels: int = 10
    #: FLAGS names avoided in the background region first, then allowed if too few pixels remain
    #: (SPXQuery avoids SOURCE then relaxes; ours: none, since catalog neighbours are masked explicitly).
    background_avoid_flags: tuple[str, ...] = ()
    #: Window background: half-size of the box (SPXQuery: 50x50 box -> 25) and the exclusion radius
    #: beyond the aperture (SPXQuery: r + 0.707).
    window_halfsize: int = 25
    window_gap: float = 0.707
    #: Sigma clipping of the background pixels (SPXQuery: 3 sigma, 3 iterations) and the statistic:
    #: 'median' (SPXQuery) or 'mean' (of the clipped pixels).
    clip_sigma: float = 3.0
    clip_iters: int = 3
    background_statistic: Literal["median", "mean"] = "median"
    #: Error of the background level = factor * clipped std / sqrt(N). SPXQuery uses 1 even for the
    #: median; the median's error is sqrt(pi/2) ~ 1.2533 times the mean's for Gaussian noise (default).
    background_error_factor: float | None = None
    #: sep.Background mesh size (px) for background='global'.
    global_mesh: int = 64

    #: Catalog neighbours: pixels within this many px of another catalog source are removed from the
    #: background region (None: the largest aperture radius of the catalog sources on the image +
    #: annulus_gap), and a measurement whose aperture overlaps
    #: another source's aperture (distance < 2 r) is flagged BLENDED.
    neighbour_mask_radius: float | None = None

    #: Zodi: subtract the ZODI plane scaled by a factor fitted over good, non-SOURCE pixels within
    #: zodi_halfsize of the source (SPXQuery fits the whole array it was given, which makes the scale
    #: depend on the cutout); 'fixed' subtracts ZODI with scale 1; 'none' leaves it in.
    zodi: Literal["fit", "fixed", "none"] = "fit"
    zodi_halfsize: int = 10
    #: The fitted scale falls back to 1 outside (zodi_min_scale, zodi_max_scale] (SPXQuery: (0, 10]) or
    #: when fewer than zodi_min_fraction of the box pixels qualify (SPXQuery: 0.5).
    zodi_min_scale: float = 0.0
    zodi_max_scale: float = 10.0
    zodi_min_fraction: float = 0.5

    #: FLAGS names that make a pixel bad, resolved through the file's MP_* cards (SPXQuery default).
    bad_flags: tuple[str, ...] = DEFAULT_BAD_FLAGS
    #: Bad pixels are masked out of aperture and background. A masked pixel in the aperture sets the
    #: BAD_PIXEL condition; with 'psf' the flux is divided by the PSF fraction the unmasked pixels
    #: cover (so it stays an estimate of the total), with 'flag' only the flag is set.
    masked_aperture: Literal["psf", "flag"] = "psf"
    #: Half-size (px) of the box whose finite positive variance repairs a non-finite or non-positive
    #: VARIANCE pixel (median); SPXQuery uses the median over the whole array.
    variance_repair_halfsize: int = 2

    #: Error of the aperture sum: sqrt(sum(w^2 var)) with w the exact pixel overlap ('squared': the
    #: variance of a weighted sum) or sqrt(sum(w var)) ('linear': sep's, photutils' and SPXQuery's
    #: convention, ~9% larger for a 2.5 px radius).
    error_weights: Literal["squared", "linear"] = "squared"

    #: PSF aperture correction to total flux (SPXQuery: off). It also removes the star's own light in its
    #: background pixels (the PSF wings), which otherwise biases the flux low by ~0.1%.
    aperture_correction: bool = True
    #: Zone lookup: 'grid' (nearest of the sorted unique zone centres; immune to swapped labels) or
    #: 'header' (nearest labelled (XCTR_k, YCTR_k), with the erratum's swap undone from VERSION).
    psf_zone_lookup: Literal["grid", "header"] = "grid"

    #: Which measurements to make: 'aperture', 'psf' (forced PSF fits, jointly with the neighbours whose
    #: PSF reaches a source) or 'both'; and which of them feeds `flux`, `flux_err` and `snr` (and so the
    #: spectra and variability statistics).
    photometry: Literal["aperture", "psf", "both"] = "both"
    flux_source: Literal["aperture", "psf"] = "aperture"
    #: Half-size (px) of the box of pixels around each source that its PSF fit uses.
    psf_fit_halfsize: int = 4
    #: Largest group of sources fitted jointly; in a larger one (a crowded field) each source is fitted with
    #: its direct neighbours only (condition PSF_LOCAL_FIT).
    psf_max_group: int = 25
    #: With flux_source 'psf', a fit is good only with reduced chi2 <= psf_max_chi2 and a PSF-weighted
    #: usable fraction of its box >= psf_min_unmasked_fraction.
    psf_max_chi2: float = 3.0
    psf_min_unmasked_fraction: float = 0.8

    #: Sources nearer than this to the frame edge (px) are not measured (SPXQuery: max(r, 5)); apertures
    #: clipped by the edge are measured and flagged EDGE.
    min_edge_distance: float = 0.0

    #: detected = SNR >= snr_threshold; good needs it too (SPXQuery: 5).
    snr_threshold: float = 5.0
    #: Condition names (see conditions.CONDITION_BITS) that make a measurement not good.
    disqualifying_conditions: tuple[str, ...] = (
        "EDGE", "BAD_PIXEL", "BLENDED", "BACKGROUND_FAILED", "NOT_MEASURED", "REGION_CLIPPED",
    )
    #: Extra FLAGS names, beyond bad_flags, that make a measurement not good when in the aperture.
    extra_disqualifying_flags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        """Validate choices early, with the option's name in the error."""
        if self.fixed_radius <= 0 or self.max_aperture_radius <= 0:
            raise ValueError("aperture radii must be positive")
        if self.annulus_steps < 0 or self.annulus_step < 0:
            raise ValueError("annulus_step and annulus_steps must be >= 0")
        if self.background_min_pixels < 1:
            raise ValueError("background_min_pixels must be >= 1")
        if self.photometry not in ("aperture", "psf", "both") or self.flux_source not in ("aperture", "psf"):
            raise ValueError(f"photometry {self.photometry!r} / flux_source {self.flux_source!r} unknown")
        if self.photometry not in (self.flux_source, "both"):
            raise ValueError(f"flux_source {self.flux_source!r} needs photometry {self.flux_source!r} or 'both'")
        if self.psf_fit_halfsize < 1 or self.psf_max_group < 1:
            raise ValueError("psf_fit_halfsize and psf_max_group must be >= 1")
        unknown = [c for c in self.disqualifying_conditions if c not in CONDITION_BITS]
        if unknown:
            raise ValueError(f"unknown condition names: {unknown}")

    @property
    def bkg_error_factor(self) -> float:
        """The factor actually applied to clipped std / sqrt(N) (sqrt(pi/2) for the median by default)."""
        if self.background_error_factor is not None:
            return self.background_error_factor
        return 1.2533141373155003 if self.background_statistic == "median" else 1.0

    @classmethod
    def spxquery(cls, **overrides: Any) -> PhotometryConfig:
        """SPXQuery 0.4's settings: 10 px^2 annulus capped at 5 px, SOURCE avoided then relaxed, no
        aperture correction, error factor 1, sources within max(r, 5) px of the edge dropped."""
        base = {
            "annulus_area": 10.0,
            "annulus_max_outer": 5.0,
            "background_avoid_flags": ("SOURCE",),
            "background_error_factor": 1.0,
            "aperture_correction": False,
            "error_weights": "linear",
            "masked_aperture": "flag",
            "min_edge_distance": 5.0,
            "zodi_halfsize": 25,
        }
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for run directories and cube attributes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhotometryConfig:
        """Inverse of to_dict; lists become tuples; unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise KeyError(f"unknown photometry options: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def with_(self, **changes: Any) -> PhotometryConfig:
        """A copy with some options changed."""
        return replace(self, **changes)


def photometry_config(options: dict[str, Any]) -> PhotometryConfig:
    """The typed photometry config from run options; `preset='spxquery'` starts from SPXQuery's settings."""
    options = dict(options)
    preset = options.pop("preset", None)
    try:
        if preset == "spxquery":
            return PhotometryConfig.from_dict({**PhotometryConfig.spxquery().to_dict(), **options})
        if preset not in (None, "default"):
            raise ConfigError(f"photometry preset {preset!r} is unknown; use 'spxquery' or 'default'")
        return PhotometryConfig.from_dict(options)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"photometry options: {exc}") from None
