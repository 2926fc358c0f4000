"""Figures: per source, the spectrum above the light curve (SPXQuery's combined figure, improved); per run,
a summary. `spxbatch plot CUBE [--source NAME ...|--all] [-o DIR]` draws them in parallel for large runs.

The user's matplotlibrc is respected: only sizes, markers and colours that carry meaning are set here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

AB_ZERO_POINT_UJY = 3631e6


def ab_magnitude(flux_ujy: np.ndarray, err_ujy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitude and its error; NaN where the flux is not positive."""
    flux_ujy = np.asarray(flux_ujy, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(flux_ujy > 0, -2.5 * np.log10(flux_ujy / AB_ZERO_POINT_UJY), np.nan)
        err = np.where(flux_ujy > 0, 1.0857 * np.asarray(err_ujy, float) / flux_ujy, np.nan)
    return mag, err


def point_classes(src: xr.Dataset, snr_threshold: float = 5.0) -> dict[str, np.ndarray]:
    """Masks of the three kinds of points drawn: good, upper limits (clean but faint), rejected."""
    good = src["good"].values.astype(bool)
    clean = (src["flags"].values == 0) if "condition" not in src else (src["condition"].values == 0)
    snr = src["flux"].values / src["flux_err"].values
    upper = ~good & clean & (snr < snr_threshold)
    return {"good": good, "upper": upper, "rejected": ~good & ~upper}


def new_source_figure() -> Figure:
    """An empty two-panel figure with fixed axes (spectrum, its colour bar, light curve, its colour bar).

    Fixed axes rather than constrained layout: layout solving dominates the cost of a figure, and batch
    plotting redraws one figure per source."""
    fig = plt.figure(figsize=(10, 8))
    fig.add_axes((0.11, 0.55, 0.74, 0.37))
    fig.add_axes((0.87, 0.55, 0.02, 0.37))
    fig.add_axes((0.11, 0.07, 0.74, 0.37))
    fig.add_axes((0.87, 0.07, 0.02, 0.37))
    return fig


def draw_source(fig: Figure, ds: xr.Dataset, name: str, magnitude: bool = False,
                snr_threshold: float = 5.0) -> Figure:
    """Draw one source onto a figure from `new_source_figure` (cleared first): the spectrum coloured by
    time above the light curve coloured by wavelength."""
    ax_s, cax_s, ax_t, cax_t = fig.axes
    for ax in fig.axes:
        ax.clear()
    src = ds.spx.source(name)
    flux, err = src["flux"].values, src["flux_err"].values
    wav, bw, mjd = src["wavelength"].values, src["bandwidth"].values, src["mjd"].values
    kinds = point_classes(src, snr_threshold)
    unit = "AB mag" if magnitude else "uJy"
    y, yerr = ab_magnitude(flux, err) if magnitude else (flux, err)
    upper_y = ab_magnitude(np.abs(flux) + 3 * err, err)[0] if magnitude else np.maximum(flux, 0) + 3 * err
    days = mjd - mjd.min() if mjd.size else mjd
    g, rej, up = kinds["good"], kinds["rejected"], kinds["upper"]

    sc = ax_s.scatter(wav[g], y[g], c=days[g], cmap="viridis", s=18, zorder=3, label="good")
    ax_s.errorbar(wav[g], y[g], xerr=bw[g] / 2, yerr=yerr[g], fmt="none", ecolor="0.6", lw=0.8, zorder=2)
    ax_s.scatter(wav[rej], y[rej], marker="x", color="0.6", s=18, label="rejected")
    ax_s.scatter(wav[up], upper_y[up], marker="v", color="tab:red", s=22, label="3σ upper limit")
    spec = src["spectrum_flux"].values
    have = np.isfinite(spec)
    if have.any():
        cw = src["channel_wavelength"].values[have]
        sy, sye = (ab_magnitude(spec[have], src["spectrum_err"].values[have]) if magnitude
                   else (spec[have], src["spectrum_err"].values[have]))
        ax_s.errorbar(cw, sy, yerr=sye, fmt="s", mfc="none", color="k", ms=5, lw=1, label="channel mean",
                      zorder=4)
    ax_s.set_xlabel("wavelength (um)")
    ax_s.set_ylabel(f"flux ({unit})")
    ax_s.legend(loc="best", fontsize="small")

    lc = ax_t.scatter(mjd[g], y[g], c=wav[g], cmap="plasma", s=18, zorder=3)
    ax_t.errorbar(mjd[g], y[g], yerr=yerr[g], fmt="none", ecolor="0.6", lw=0.8, zorder=2)
    ax_t.scatter(mjd[rej], y[rej], marker="x", color="0.6", s=18)
    ax_t.scatter(mjd[up], upper_y[up], marker="v", color="tab:red", s=22)
    ax_t.set_xlabel("MJD")
    ax_t.set_ylabel(f"flux ({unit})")
    for cax, mappable, label in ((cax_s, sc, "days since first observation"), (cax_t, lc, "wavelength (um)")):
        if g.any():
            fig.colorbar(mappable, cax=cax, label=label)
        else:
            cax.set_axis_off()
    if magnitude:
        ax_s.invert_yaxis()
        ax_t.invert_yaxis()
    elif g.any() and y[g].min() > 0 and y[g].max() > 10 * y[g].min():
        ax_s.set_yscale("log")  # a spectrum over 0.75-5 um spans decades: a linear axis flattens it
        ax_t.set_yscale("log")
    ra, dec = float(src["ra"]), float(src["dec"])
    fig.suptitle(f"{name}  (RA {ra:.5f}, Dec {dec:+.5f})  {int(g.sum())} good of {flux.size} measurements")
    return fig


def source_figure(ds: xr.Dataset, name: str, magnitude: bool = False, snr_threshold: float = 5.0) -> Figure:
    """The combined figure of one source on a new figure (the caller saves or shows it)."""
    return draw_source(new_source_figure(), ds, name, magnitude, snr_threshold)


def summary_figure(ds: xr.Dataset) -> Figure:
    """The run at a glance: sky coverage, measurements per band, SNR distribution, status counts."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    ax = axes[0, 0]
    sky = ax.scatter(ds["ra"].values, ds["dec"].values, c=ds["row_size"].values, cmap="viridis", s=10)
    fig.colorbar(sky, ax=ax, label="measurements per source")
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.set_title("sources")
    ax = axes[0, 1]
    bands = np.arange(1, 7)
    band = ds["band"].values
    good = ds["good"].values.astype(bool)
    ax.bar(bands - 0.2, [np.sum(band == b) for b in bands], width=0.4, label="all")
    ax.bar(bands + 0.2, [np.sum((band == b) & good) for b in bands], width=0.4, label="good")
    ax.set_xticks(bands, [f"D{b}" for b in bands])
    ax.set_xlabel("band")
    ax.set_ylabel("measurements")
    ax.legend()
    ax = axes[1, 0]
    snr = ds["flux"].values / ds["flux_err"].values
    snr = snr[np.isfinite(snr)]
    ax.hist(np.clip(snr, -10, 1e4), bins=np.concatenate([np.linspace(-10, 10, 21), np.geomspace(11, 1e4, 30)]))
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("SNR (flux / flux_err)")
    ax.set_ylabel("measurements")
    ax = axes[1, 1]
    labels, counts = np.unique(ds["status"].values.astype(str), return_counts=True)
    ax.bar(labels, counts)
    ax.set_ylabel("sources")
    ax.set_title("status")
    fig.suptitle(f"spxbatch run: {ds.sizes['source']} sources, {ds.sizes['obs']} measurements")
    return fig


def plot_source(ds: xr.Dataset, name: str, magnitude: bool = False) -> Figure:
    """Public API: the combined figure of one source (the caller saves or shows it)."""
    return source_figure(ds, name, magnitude)


def safe_filename(name: str) -> str:
    """A file name made of the source name, with anything unsafe replaced by an underscore."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def _draw_sources(cube: str, names: list[str], outdir: str, magnitude: bool) -> int:
    """Worker: open the cube once and write one PNG per source."""
    from .cube import open_cube

    ds = open_cube(cube).load()
    fig = new_source_figure()
    for name in names:
        draw_source(fig, ds, name, magnitude)
        fig.savefig(Path(outdir) / f"{safe_filename(name)}.png", dpi=100, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    return len(names)


def plot_cube(cube: str | Path, names: Sequence[str] | None, outdir: str | Path, magnitude: bool = False,
              workers: int | None = None) -> list[Path]:
    """Write the summary figure and one figure per named source (all when None), in parallel processes."""
    from .cube import open_cube

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ds = open_cube(cube)
    names = list(ds["source"].values.astype(str)) if names is None else list(names)
    missing = sorted(set(names) - set(ds["source"].values.astype(str)))
    if missing:
        raise KeyError(f"no source named {missing[0]!r} in {cube}")
    fig = summary_figure(ds.load())
    written = [outdir / "summary.png"]
    fig.savefig(written[0], dpi=110)
    plt.close(fig)
    workers = workers or min(os.cpu_count() or 1, max(1, len(names) // 50))
    chunks = [names[i::workers] for i in range(workers)]
    if workers == 1:
        _draw_sources(str(cube), names, str(outdir), magnitude)
    else:
        # spawn, not fork: the parent holds zarr/dask threads, and forking those can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_draw_sources, [str(cube)] * workers, chunks, [str(outdir)] * workers,
                          [magnitude] * workers))
    return written + [outdir / f"{safe_filename(n)}.png" for n in names]


def plot_main(argv: list[str]) -> int:
    """`spxbatch plot CUBE [--source NAME ...|--all] [-o DIR] [--mag]`."""
    p = argparse.ArgumentParser(prog="spxbatch plot", description="Draw per-source and summary figures.")
    p.add_argument("cube")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--source", action="append", help="a source name (repeatable)")
    who.add_argument("--all", action="store_true", help="every source (the default without --source)")
    p.add_argument("-o", "--outdir", help="where PNGs go (default CUBE_STEM_plots)")
    p.add_argument("--mag", action="store_true", help="AB magnitudes instead of uJy")
    p.add_argument("--workers", type=int)
    args = p.parse_args(argv)
    outdir = args.outdir or str(Path(args.cube).with_suffix("")) + "_plots"
    paths = plot_cube(args.cube, args.source, outdir, args.mag, args.workers)
    print(f"{len(paths)} figures written to {outdir}")
    return 0
