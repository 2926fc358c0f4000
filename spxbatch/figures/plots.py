"""Figures of a cube: per source, the spectrum above the light curve (SPXQuery's combined figure, improved);
per run, a summary (figures.summary). `spxbatch.plot_source(ds, name)` returns one source's figure.

A `SourceFigure` builds its axes, artists, legend and colour bars once and only replaces data, limits and
texts per source, so that batch plotting (`spxbatch.plot_batch`) redraws one figure per worker. The
user's matplotlibrc is respected: only sizes, markers and colours that carry meaning are set here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from matplotlib.artist import Artist
from matplotlib.axis import Axis
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.path import Path as MarkerPath
from matplotlib.ticker import MaxNLocator

from spxbatch.cube.blocks import BLOCK_ROWS, source_ranges
from spxbatch.cube.export import ab_magnitude
from spxbatch.level2.constants import BANDS
from spxbatch.photometry.config import PhotometryConfig, photometry_config
from spxbatch.photometry.quality import good_verdict

#: The spectrum's wavelength axis and the wavelength colour scale: SPHEREx's whole range, the same for every
#: source so that figures compare at a glance.
WAVELENGTH_RANGE_UM = (BANDS[1].lo_um, BANDS[max(BANDS)].hi_um)

#: An upper-limit marker: a bar at the limit and an arrow down from it (down is fainter in flux and in AB
#: magnitude on its inverted axis).
UPPER_LIMIT_MARKER = MarkerPath(
    [(-0.45, 0), (0.45, 0), (0, 0), (0, -1), (-0.3, -0.65), (0, -1), (0.3, -0.65)],
    [MarkerPath.MOVETO, MarkerPath.LINETO, MarkerPath.MOVETO, MarkerPath.LINETO, MarkerPath.MOVETO,
     MarkerPath.LINETO, MarkerPath.LINETO])

#: Point kinds in drawing order, with their legend labels.
KIND_LABELS = {"good": "good", "upper": "3σ upper limit", "rejected": "rejected"}


def quality_config(ds: xr.Dataset) -> PhotometryConfig:
    """The quality rules that made the cube's `good`: those of the last `spxbatch qc`, else the run's."""
    if "quality_rules" in ds.attrs:
        return PhotometryConfig.from_dict(json.loads(ds.attrs["quality_rules"]))
    run_config = json.loads(ds.attrs.get("config", "{}"))
    return photometry_config(run_config.get("photometry", {}))


def upper_limit_mask(ds: xr.Dataset) -> np.ndarray:
    """Measurements rejected only for their SNR (a faint source, not a bad measurement): the ones drawn
    as upper limits. Everything else not good is drawn as rejected."""
    good = ds["good"].values.astype(bool)
    table = {"flags": ds["flags"].values, "condition": ds["condition"].values, "snr": ds["snr"].values,
             "measured": np.ones(good.size, dtype=bool)}
    return ~good & good_verdict(table, quality_config(ds).with_(snr_threshold=-np.inf))


@dataclass
class SourcePoints:
    """What one source's figure shows: its measurements (time order) and its channel spectrum."""

    name: str
    ra: float
    dec: float
    flux: np.ndarray
    flux_err: np.ndarray
    wavelength: np.ndarray
    bandwidth: np.ndarray
    mjd: np.ndarray
    good: np.ndarray
    upper: np.ndarray
    channel_wavelength: np.ndarray
    spectrum_flux: np.ndarray
    spectrum_err: np.ndarray

    @property
    def kinds(self) -> dict[str, np.ndarray]:
        """Masks of the three kinds of points: good, upper limits, rejected (they partition the points)."""
        return {"good": self.good, "upper": self.upper, "rejected": ~self.good & ~self.upper}


def source_rows(ds: xr.Dataset, first: int, stop: int, variables: tuple[str, ...] | None = None) -> xr.Dataset:
    """Sources first..stop-1 with only their own measurements, loaded (obs_start made relative to them);
    `variables` (default: all) limits what is read."""
    start, size = ds["obs_start"].values[first:stop], ds["row_size"].values[first:stop]
    lo, hi = (int(start[0]), int(start[-1] + size[-1])) if stop > first else (0, 0)
    sub = (ds if variables is None else ds[list(variables)]).isel(source=slice(first, stop), obs=slice(lo, hi))
    sub = sub.load()
    sub["obs_start"] = sub["obs_start"] - lo
    return sub


class CubePoints:
    """The columns figures need, read from a cube once; `points(i)` slices out one source."""

    OBS_VARS = ("flux", "flux_err", "wavelength", "bandwidth", "mjd", "good")
    #: Every variable it reads (the upper limits need the quality columns too).
    VARIABLES = ("ra", "dec", "obs_start", "row_size", *OBS_VARS, "flags", "condition", "snr", "spectrum_flux",
                 "spectrum_err", "channel_wavelength")

    def __init__(self, ds: xr.Dataset):
        self.names = ds["source"].values.astype(str)
        self.ra, self.dec = ds["ra"].values, ds["dec"].values
        self.start, self.size = ds["obs_start"].values, ds["row_size"].values
        self.obs = {v: ds[v].values for v in self.OBS_VARS}
        self.obs["good"] = self.obs["good"].astype(bool)
        self.upper = upper_limit_mask(ds)
        self.channel_wavelength = ds["channel_wavelength"].values
        self.spectrum_flux, self.spectrum_err = ds["spectrum_flux"].values, ds["spectrum_err"].values

    def points(self, i: int) -> SourcePoints:
        """Source `i`'s measurements and spectrum."""
        rows = slice(int(self.start[i]), int(self.start[i] + self.size[i]))
        return SourcePoints(
            name=str(self.names[i]), ra=float(self.ra[i]), dec=float(self.dec[i]),
            **{v: self.obs[v][rows] for v in self.OBS_VARS}, upper=self.upper[rows],
            channel_wavelength=self.channel_wavelength, spectrum_flux=self.spectrum_flux[i],
            spectrum_err=self.spectrum_err[i])


def longest_time_span(ds: xr.Dataset, block_rows: int = BLOCK_ROWS) -> float:
    """Days between the first and last measurement of the source observed over the longest time (each
    source's measurements are time-ordered in the cube); `mjd` read `block_rows` at a time."""
    starts, sizes = ds["obs_start"].values, ds["row_size"].values
    longest = 0.0
    for first, stop, o0, o1 in source_ranges(ds, block_rows):
        if o1 > o0:
            size = sizes[first:stop]
            start = starts[first:stop][size > 0] - o0
            mjd = ds["mjd"][o0:o1].values
            longest = max(longest, float(np.max(mjd[start + size[size > 0] - 1] - mjd[start])))
    return longest


#: Mantissas of the linear axis limits: every range ends on one of these times a power of ten, so that sources
#: with similar fluxes share exactly the same axis (batch plotting draws each distinct axis once).
LIMIT_MANTISSAS = np.array([1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0])


def _ceil_nice(value: float) -> float:
    """The smallest number of the form LIMIT_MANTISSAS x 10^k at or above a positive value."""
    power = 10.0 ** np.floor(np.log10(value))
    return float(LIMIT_MANTISSAS[np.searchsorted(LIMIT_MANTISSAS, value / power * (1 - 1e-12))] * power)


def nice_limits(lo: float, hi: float, scale: str) -> tuple[float, float]:
    """Axis limits around [lo, hi] on a coarse grid of round values: whole decades on a log axis, half
    magnitudes for 'mag', and on a linear flux axis a range from zero (or from a round negative value) to
    a round value."""
    if scale == "log":
        return 10.0 ** np.floor(np.log10(lo)), 10.0 ** np.ceil(np.log10(hi))
    if scale == "mag":
        return np.floor(lo * 2) / 2, np.ceil(hi * 2) / 2
    bottom = 0.0 if lo >= 0 else -_ceil_nice(-lo)
    top = 0.0 if hi <= 0 else _ceil_nice(hi)
    return bottom, top


def time_limits(first: float, last: float) -> tuple[float, float]:
    """MJD axis limits: the observed span with margins, widened to round ticks (few distinct ranges)."""
    lo, hi = _padded(first, last, False)
    ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return float(ticks[ticks <= lo].max()), float(ticks[ticks >= hi].min())


def _padded(lo: float, hi: float, log: bool) -> tuple[float, float]:
    """An axis range around [lo, hi] with 5 % margins (in log space on a log axis)."""
    if log:
        a, b = _padded(np.log10(lo), np.log10(hi), False)
        return 10**a, 10**b
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.1, 1.0)
    return lo - pad, hi + pad


def _error_segments(x: np.ndarray, y: np.ndarray, xerr: np.ndarray | None, yerr: np.ndarray) -> np.ndarray:
    """Error bars as line segments: vertical ones, then horizontal ones when `xerr` is given."""
    segs = [np.stack([np.column_stack([x, y - yerr]), np.column_stack([x, y + yerr])], axis=1)]
    if xerr is not None:
        segs.append(np.stack([np.column_stack([x - xerr, y]), np.column_stack([x + xerr, y])], axis=1))
    return np.concatenate(segs).reshape(-1, 2, 2)


class SourceFigure:
    """The two-panel source figure: the spectrum (flux vs wavelength, points coloured by days since the
    first observation, the channel means overlaid) above the light curve (flux vs MJD, coloured by
    wavelength). Good points are filled with error bars, rejected ones grey crosses, upper limits red
    arrows. Built once; `show(points)` replaces everything that depends on the source."""

    def __init__(self, fig: Figure | None = None, magnitude: bool = False, time_span: float = 1.0):
        self.fig = fig if fig is not None else Figure(figsize=(10, 8))
        self.magnitude = magnitude
        fig = self.fig
        self.ax_spec = fig.add_axes((0.10, 0.52, 0.75, 0.35))
        self.cax_time = fig.add_axes((0.87, 0.52, 0.018, 0.35))
        self.ax_lc = fig.add_axes((0.10, 0.07, 0.75, 0.35))
        self.cax_wave = fig.add_axes((0.87, 0.07, 0.018, 0.35))
        # one time scale for the whole run, so that a colour means the same delay in every source's figure
        time_norm = Normalize(0.0, max(float(MaxNLocator(nbins=5).tick_values(0.0, max(time_span, 1.0))[-1]),
                                       time_span))
        wave_norm = Normalize(*WAVELENGTH_RANGE_UM)
        flux_label = "AB magnitude" if magnitude else "flux (µJy)"
        self.artists = {}
        for panel, ax, cmap, norm in (("spec", self.ax_spec, "viridis", time_norm),
                                      ("lc", self.ax_lc, "plasma", wave_norm)):
            self.artists[panel] = {
                # error bars above the axes frame (zorder 2.5), as everything drawn per source
                "errors": ax.add_collection(LineCollection([], colors="0.6", linewidths=0.8, zorder=2.6)),
                "good": ax.scatter([], [], c=[], cmap=cmap, norm=norm, s=18, zorder=3, label=KIND_LABELS["good"]),
                "upper": ax.scatter([], [], marker=UPPER_LIMIT_MARKER, s=110, facecolors="none",
                                    edgecolors="tab:red", linewidths=1.2, zorder=3, label=KIND_LABELS["upper"]),
                "rejected": ax.scatter([], [], marker="x", color="0.55", s=18, linewidths=1, zorder=3,
                                       label=KIND_LABELS["rejected"]),
            }
            ax.set_ylabel(flux_label)
        self.channel_errors = self.ax_spec.add_collection(LineCollection([], colors="k", linewidths=1, zorder=4))
        (self.channel_means,) = self.ax_spec.plot([], [], "s", mfc="none", mec="k", ms=5, zorder=4,
                                                  label="channel mean")
        self.ax_spec.set_xlim(*WAVELENGTH_RANGE_UM)
        self.ax_spec.set_xlabel("wavelength (µm)")
        self.ax_lc.set_xlabel("MJD")
        self.ax_lc.xaxis.get_major_formatter().set_useOffset(False)  # whole MJDs, not an offset and 0.01s
        fig.colorbar(self.artists["spec"]["good"], cax=self.cax_time, label="days since first observation")
        fig.colorbar(self.artists["lc"]["good"], cax=self.cax_wave, label="wavelength (µm)")
        self.legend = fig.legend(
            handles=[Line2D([], [], ls="", marker="o", color="#21918c", ms=5, label=KIND_LABELS["good"]),
                     Line2D([], [], ls="", marker=UPPER_LIMIT_MARKER, mec="tab:red", mfc="none", ms=11, mew=1.2,
                            label=KIND_LABELS["upper"]),
                     Line2D([], [], ls="", marker="x", color="0.55", ms=5, label=KIND_LABELS["rejected"]),
                     self.channel_means],
            loc="lower left", bbox_to_anchor=(0.10, 0.88), ncol=4, frameon=False, fontsize="small",
            borderaxespad=0)
        self.title = fig.suptitle("", y=0.975)
        self.counts = fig.text(0.5, 0.93, "", ha="center", va="center", fontsize="small")

    @property
    def dynamic_artists(self) -> list:
        """What changes from one source to the next, in drawing order (by zorder within each panel, as
        matplotlib draws them): the data, the flux axes and the time axis, the title and the counts. The
        rest (frames, legend, colour bars, the wavelength axis) is the same for every source."""
        spectrum = [self.ax_spec.yaxis, *self.artists["spec"].values(), self.channel_errors, self.channel_means]
        curve = [self.ax_lc.xaxis, self.ax_lc.yaxis, *self.artists["lc"].values()]
        return [*sorted(spectrum, key=Artist.get_zorder), *sorted(curve, key=Artist.get_zorder), self.title,
                self.counts]

    @property
    def frame_keys(self) -> dict[Artist, Callable[[], Hashable]]:
        """Dynamic artists whose look depends only on a few values, with a function returning them: the
        axes, by scale and limits (which `show` takes from a coarse grid of round values so that they
        repeat; the two flux axes are alike, so they share their images)."""

        def limits(axis: Axis) -> Callable[[], Hashable]:
            return lambda: (axis.axis_name, axis.get_scale(), tuple(axis.get_view_interval()))

        return {axis: limits(axis) for axis in (self.ax_spec.yaxis, self.ax_lc.xaxis, self.ax_lc.yaxis)}

    def _values(self, p: SourcePoints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """y, its error and the upper-limit values, in the figure's unit."""
        limit = np.maximum(p.flux, 0) + 3 * p.flux_err
        if self.magnitude:
            y, yerr = ab_magnitude(p.flux, p.flux_err)
            return y, yerr, ab_magnitude(limit, p.flux_err)[0]
        return p.flux, p.flux_err, limit

    def _y_scale_and_range(self, p: SourcePoints, y: np.ndarray, yerr: np.ndarray,
                           limit: np.ndarray) -> tuple[bool, tuple[float, float]]:
        """Log axis when positive good fluxes span more than a decade (a 0.75-5 um spectrum often does);
        the range covers good points with their errors, upper limits and channel means (all points if
        there are none of those)."""
        g, up = p.good & np.isfinite(y), p.upper & np.isfinite(limit)
        spec = p.spectrum_flux[np.isfinite(p.spectrum_flux)]
        if self.magnitude:
            spec = ab_magnitude(spec, np.zeros_like(spec))[0]
        lo_parts = [y[g] - np.nan_to_num(yerr[g]), limit[up], spec]
        hi_parts = [y[g] + np.nan_to_num(yerr[g]), limit[up], spec]
        values = np.concatenate(lo_parts + hi_parts)
        values = values[np.isfinite(values)]
        if values.size == 0:
            values = y[np.isfinite(y)]
        if values.size == 0:
            return False, (0.0, 1.0)
        log = (not self.magnitude and g.any() and y[g].min() > 0 and y[g].max() > 10 * y[g].min()
               and values.min() > 0)
        if log:  # error bars reaching zero or below would stretch a log axis to nothing
            values = np.concatenate([y[g], limit[up], spec, values[values > 0]])
        return bool(log), _padded(float(values.min()), float(values.max()), bool(log))

    def show(self, p: SourcePoints) -> None:
        """Draw source `p`: replace points, error bars, channel means, axis ranges and texts."""
        y, yerr, limit = self._values(p)
        kinds = p.kinds
        g = kinds["good"]
        days = p.mjd - p.mjd.min() if p.mjd.size else p.mjd
        log, (lo, hi) = self._y_scale_and_range(p, y, yerr, limit)
        # rejected points outside the range sit on its edge (no flux, e.g. a negative one in AB mag: the faint edge)
        rejected_y = np.clip(np.nan_to_num(y, nan=hi if self.magnitude else lo), lo, hi)
        plotted_y = {"good": y, "upper": limit, "rejected": rejected_y}
        panels = (("spec", p.wavelength, p.bandwidth / 2, days), ("lc", p.mjd, None, p.wavelength))
        for panel, x, xerr, colour in panels:
            art = self.artists[panel]
            for kind, mask in kinds.items():
                art[kind].set_offsets(np.column_stack([x[mask], plotted_y[kind][mask]]))
                art[kind].set_visible(bool(mask.any()))  # an empty collection still costs a draw
            art["good"].set_array(colour[g])
            art["errors"].set_segments(_error_segments(x[g], y[g], None if xerr is None else xerr[g], yerr[g]))
        have = np.isfinite(p.spectrum_flux)
        cw = p.channel_wavelength[have]
        sy, sye = (ab_magnitude(p.spectrum_flux[have], p.spectrum_err[have]) if self.magnitude
                   else (p.spectrum_flux[have], p.spectrum_err[have]))
        self.channel_means.set_data(cw, sy)
        self.channel_errors.set_segments(_error_segments(cw, sy, None, sye))
        for ax in (self.ax_spec, self.ax_lc):
            scale = "log" if log else "linear"
            if ax.get_yscale() != scale:
                ax.set_yscale(scale)
            bottom, top = nice_limits(lo, hi, "mag" if self.magnitude else scale)
            ax.set_ylim((top, bottom) if self.magnitude else (bottom, top))
        if p.mjd.size:
            self.ax_lc.set_xlim(*time_limits(float(p.mjd.min()), float(p.mjd.max())))
        self.title.set_text(f"{p.name}  RA {p.ra:.5f}°  Dec {p.dec:+.5f}°")
        n_up, n_rej = int(kinds["upper"].sum()), int(kinds["rejected"].sum())
        self.counts.set_text(f"{p.flux.size} measurements: {int(g.sum())} good, {n_up} upper limits, "
                             f"{n_rej} rejected")


def source_figure(ds: xr.Dataset, name: str, magnitude: bool = False, fig: Figure | None = None) -> Figure:
    """The combined figure of one source of a cube (on `fig` if given, else a new Figure)."""
    i = ds.spx.index(name)
    figure = SourceFigure(fig, magnitude, longest_time_span(ds))
    figure.show(CubePoints(source_rows(ds, i, i + 1)).points(0))
    return figure.fig


def plot_source(ds: xr.Dataset, name: str, magnitude: bool = False) -> Figure:
    """Public API: one source's combined figure, on a pyplot figure (so it shows in notebooks and with
    plt.show()); the caller saves or shows it."""
    import matplotlib.pyplot as plt

    return source_figure(ds, name, magnitude, plt.figure(figsize=(10, 8)))
