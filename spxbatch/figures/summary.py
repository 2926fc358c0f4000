"""The run summary figure (sky coverage, measurements per band, SNR distribution, source status), drawn from
counts gathered block of sources by block, so a cube larger than memory is summarised in one block's memory."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from spxbatch.cube.blocks import BLOCK_ROWS, source_ranges
from spxbatch.level2.constants import BANDS

#: Edges of the SNR histogram: linear through the noise, logarithmic above.
SNR_BINS = np.concatenate([np.linspace(-10, 10, 21), np.geomspace(11, 1e4, 30)])


@dataclass
class RunSummary:
    """What the summary figure shows: per source its position and measurement count, and counts over the
    measurements (per band, all and good; the SNR histogram) and over the sources (per status)."""

    ra: np.ndarray
    dec: np.ndarray
    row_size: np.ndarray
    band_all: np.ndarray
    band_good: np.ndarray
    snr_counts: np.ndarray
    status: dict[str, int]

    @property
    def n_obs(self) -> int:
        """Measurements in the cube."""
        return int(self.row_size.sum())


def run_summary(ds: xr.Dataset, block_rows: int = BLOCK_ROWS) -> RunSummary:
    """The summary's counts, read `block_rows` measurements at a time (only band, good, flux and flux_err)."""
    n_bands = len(BANDS)
    band_all = np.zeros(n_bands, dtype=np.int64)
    band_good = np.zeros(n_bands, dtype=np.int64)
    snr_counts = np.zeros(SNR_BINS.size - 1, dtype=np.int64)
    for _, _, o0, o1 in source_ranges(ds, block_rows):
        rows = ds[["band", "good", "flux", "flux_err"]].isel(obs=slice(o0, o1)).load()
        band = rows["band"].values.astype(np.int64) - 1
        band_all += np.bincount(band, minlength=n_bands)[:n_bands]
        band_good += np.bincount(band[rows["good"].values.astype(bool)], minlength=n_bands)[:n_bands]
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = rows["flux"].values / rows["flux_err"].values
        snr_counts += np.histogram(np.clip(snr[np.isfinite(snr)], -10, 1e4), bins=SNR_BINS)[0]
    status = Counter(ds["status"].values.astype(str).tolist())
    return RunSummary(ds["ra"].values, ds["dec"].values, ds["row_size"].values, band_all, band_good, snr_counts,
                      dict(sorted(status.items())))


def summary_figure(ds: xr.Dataset | RunSummary, fig: Figure | None = None) -> Figure:
    """The run at a glance: sky coverage, measurements per band, SNR distribution, status counts (of a cube,
    read block by block, or of its `run_summary`)."""
    s = ds if isinstance(ds, RunSummary) else run_summary(ds)
    fig = fig if fig is not None else Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2, gridspec_kw={"left": 0.07, "right": 0.97, "bottom": 0.07, "top": 0.91,
                                           "hspace": 0.32, "wspace": 0.25})
    ax = axes[0, 0]
    sky = ax.scatter(s.ra, s.dec, c=s.row_size, cmap="viridis", s=10)
    fig.colorbar(sky, ax=ax, label="measurements per source")
    ax.set_xlabel("RA (deg)")
    ax.set_ylabel("Dec (deg)")
    ax.invert_xaxis()  # east to the left, as on the sky
    ax.set_title("sources")
    ax = axes[0, 1]
    bands = np.arange(1, len(BANDS) + 1)
    ax.bar(bands - 0.2, s.band_all, width=0.4, label="all")
    ax.bar(bands + 0.2, s.band_good, width=0.4, label="good")
    ax.set_xticks(bands, [f"D{b}" for b in bands])
    ax.set_xlabel("band")
    ax.set_ylabel("measurements")
    ax.legend()
    ax = axes[1, 0]
    ax.hist(SNR_BINS[:-1], bins=SNR_BINS, weights=s.snr_counts)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("SNR (flux / flux_err)")
    ax.set_ylabel("measurements")
    ax = axes[1, 1]
    ax.bar_label(ax.bar(list(s.status), list(s.status.values())))
    ax.margins(y=0.12)  # room for the counts above the bars
    ax.set_ylabel("sources")
    ax.set_title("status")
    fig.suptitle(f"spxbatch run: {len(s.ra)} sources, {s.n_obs} measurements")
    return fig
