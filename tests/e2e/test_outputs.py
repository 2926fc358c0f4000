"""Figures and exports of a run on the simulated archive: what each figure plots against the cube, the batch
renderer against a plain matplotlib draw, and exports that round-trip."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table
from image_compare import block_means
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from spxbatch.cube.export import export_csv, export_parquet, export_votable
from spxbatch.cube.filenames import NAME_MAP
from spxbatch.cube.requalify import requalify
from spxbatch.cube.store import open_cube
from spxbatch.errors import ConfigError
from spxbatch.figures.batch import plot_cube
from spxbatch.figures.plots import (
    KIND_LABELS,
    CubePoints,
    SourceFigure,
    longest_time_span,
    plot_source,
    source_figure,
    source_rows,
)
from spxbatch.figures.rasterize import FrameWriter
from spxbatch.figures.summary import summary_figure
from spxbatch.photometry.config import PhotometryConfig
from spxbatch.photometry.quality import good_verdict

SNR_THRESHOLD = PhotometryConfig().snr_threshold


@pytest.fixture(scope="module")
def cube(sim_run):
    return open_cube(sim_run).load()


@pytest.fixture(scope="module")
def points(cube):
    return CubePoints(cube)


def _offsets(collection) -> np.ndarray:
    return np.asarray(collection.get_offsets()).reshape(-1, 2)


def _measured(cube) -> list[int]:
    return [int(i) for i in np.flatnonzero(cube["row_size"].values > 0)]


def test_the_run_has_every_kind_of_point(cube, points):
    """The fixture must exercise good points, upper limits and rejected points, or the tests below prove
    little."""
    good, upper = points.obs["good"], points.upper
    assert good.sum() > 50 and upper.sum() > 5 and (~good & ~upper).sum() > 5
    # upper limits are rejected for their SNR only; the other rejected ones for a flag or a condition
    snr = cube["snr"].values
    assert np.all(snr[upper] < SNR_THRESHOLD)
    table = {"flags": cube["flags"].values, "condition": cube["condition"].values, "snr": np.full(snr.size, 1e9),
             "measured": np.ones(snr.size, bool)}
    assert not good_verdict(table, PhotometryConfig())[~good & ~upper].any()


def test_source_figure_plots_every_measurement_of_the_cube(cube, points):
    figure = SourceFigure(time_span=longest_time_span(cube))
    for i in _measured(cube):
        p = points.points(i)
        figure.show(p)
        rows = slice(int(cube["obs_start"][i]), int(cube["obs_start"][i] + cube["row_size"][i]))
        src = cube.isel(obs=rows, source=i)
        flux, err = src["flux"].values, src["flux_err"].values
        for panel, ax, x in (("spec", figure.ax_spec, src["wavelength"].values),
                             ("lc", figure.ax_lc, src["mjd"].values)):
            art = figure.artists[panel]
            drawn = {kind: _offsets(art[kind]) if art[kind].get_visible() else np.empty((0, 2))
                     for kind in KIND_LABELS}
            assert sum(len(v) for v in drawn.values()) == src.sizes["obs"], (p.name, panel)
            for kind, mask in p.kinds.items():
                np.testing.assert_allclose(drawn[kind][:, 0], x[mask])
            np.testing.assert_allclose(drawn["good"][:, 1], flux[p.good])
            np.testing.assert_allclose(drawn["upper"][:, 1], np.maximum(flux, 0)[p.upper] + 3 * err[p.upper])
            lo, hi = ax.get_ylim()
            lower = drawn["good"][:, 1] - err[p.good]  # on a log axis an error bar may reach below zero
            assert np.all(((lower >= lo) | ((ax.get_yscale() == "log") & (lower <= 0)))
                          & (drawn["good"][:, 1] + err[p.good] <= hi))
            assert np.all((drawn["upper"][:, 1] >= lo) & (drawn["upper"][:, 1] <= hi))
            assert np.all((drawn["rejected"][:, 1] >= lo) & (drawn["rejected"][:, 1] <= hi))
            xlo, xhi = ax.get_xlim()
            assert np.all((x >= xlo) & (x <= xhi))
            # one vertical error bar per good point (plus a horizontal bandwidth bar in the spectrum)
            segments = art["errors"].get_segments()
            assert len(segments) == p.good.sum() * (2 if panel == "spec" else 1)
            half = np.array([abs(s[1, 1] - s[0, 1]) / 2 for s in segments[:p.good.sum()]])
            np.testing.assert_allclose(half, err[p.good])
        days = src["mjd"].values - src["mjd"].values.min()
        np.testing.assert_allclose(figure.artists["spec"]["good"].get_array(), days[p.good])
        np.testing.assert_allclose(figure.artists["lc"]["good"].get_array(), src["wavelength"].values[p.good])
        have = np.isfinite(src["spectrum_flux"].values)
        np.testing.assert_allclose(figure.channel_means.get_xdata(), cube["channel_wavelength"].values[have])
        np.testing.assert_allclose(figure.channel_means.get_ydata(), src["spectrum_flux"].values[have])
        assert figure.title.get_text().startswith(f"{p.name}  RA {float(src['ra']):.5f}°  Dec ")
        assert figure.counts.get_text() == (f"{src.sizes['obs']} measurements: {p.good.sum()} good, "
                                            f"{p.upper.sum()} upper limits, {(~p.good & ~p.upper).sum()} rejected")


def test_source_figure_labels_and_layout(cube):
    name = str(cube["source"].values[_measured(cube)[0]])
    fig = source_figure(cube, name)
    FigureCanvasAgg(fig).draw()
    ax_spec, cax_time, ax_lc, cax_wave = fig.axes
    assert ax_spec.get_xlabel() == "wavelength (µm)" and ax_spec.get_ylabel() == "flux (µJy)"
    assert ax_lc.get_xlabel() == "MJD" and ax_lc.get_ylabel() == "flux (µJy)"
    assert cax_time.get_ylabel() == "days since first observation"
    assert cax_wave.get_ylabel() == "wavelength (µm)"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*KIND_LABELS.values(), "channel mean"]
    assert ax_lc.xaxis.get_offset_text().get_text() == ""  # whole MJDs, no offset notation
    # no text overlaps another text or a plot area, and all of it is inside the figure
    renderer = fig.canvas.get_renderer()
    texts = [*fig.texts, *fig.legends[0].get_texts()]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            texts += [axis.label, axis.get_offset_text(), *axis.get_ticklabels(which="both")]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    assert len(boxes) > 30
    for a, (text, box) in enumerate(boxes):
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0 and box.y1 <= fig.bbox.height, text
        assert not any(box.overlaps(ax.bbox) for ax in fig.axes), text
        for other, other_box in boxes[a + 1:]:
            assert not box.overlaps(other_box), (text, other)


def test_figures_respect_the_users_matplotlibrc(cube):
    """Styles come from the user's rc (only meaningful colours and markers are set), and importing the
    plotting modules leaves the user's backend alone."""
    import os
    import subprocess
    import sys

    import matplotlib as mpl

    name = str(cube["source"].values[_measured(cube)[0]])
    with mpl.rc_context({"axes.labelsize": 17, "font.family": "DejaVu Serif", "axes.facecolor": "#eeeeee"}):
        fig = source_figure(cube, name)
    ax_spec = fig.axes[0]
    assert ax_spec.xaxis.label.get_size() == 17
    assert ax_spec.xaxis.label.get_fontfamily() == ["DejaVu Serif"]
    assert mpl.colors.to_hex(ax_spec.get_facecolor()) == "#eeeeee"
    code = "import spxbatch.figures.plots, spxbatch.figures.batch, matplotlib; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "svg"})
    assert out.stdout.strip() == "svg"


def test_magnitude_figure(cube, points):
    i = _measured(cube)[0]
    p = points.points(i)
    figure = SourceFigure(magnitude=True, time_span=longest_time_span(cube))
    figure.show(p)
    assert figure.ax_spec.get_ylabel() == "AB magnitude"
    lo, hi = figure.ax_spec.get_ylim()
    assert lo > hi  # brighter up
    good_y = _offsets(figure.artists["spec"]["good"])[:, 1]
    np.testing.assert_allclose(good_y, -2.5 * np.log10(p.flux[p.good] / 3631e6))


def test_plot_source_returns_a_pyplot_figure(cube):
    import matplotlib.pyplot as plt

    name = str(cube["source"].values[_measured(cube)[0]])
    fig = plot_source(cube, name)
    assert plt.fignum_exists(fig.number)
    plt.close(fig)
    with pytest.raises(KeyError, match="nobody"):
        plot_source(cube, "nobody")


def test_summary_figure_matches_cube(cube):
    fig = summary_figure(cube)
    sky, bands, snr, status, _ = fig.axes  # the last is the sky panel's colour bar
    assert len(_offsets(sky.collections[0])) == cube.sizes["source"]
    assert sky.get_xlim()[0] > sky.get_xlim()[1]  # RA increases to the left
    heights = [b.get_height() for b in bands.patches]
    band = cube["band"].values
    good = cube["good"].values.astype(bool)
    assert heights[:6] == [np.sum(band == b) for b in range(1, 7)]
    assert heights[6:] == [np.sum((band == b) & good) for b in range(1, 7)]
    finite = np.isfinite(cube["flux"].values / cube["flux_err"].values)
    assert sum(b.get_height() for b in snr.patches) == finite.sum()
    labels, counts = np.unique(cube["status"].values.astype(str), return_counts=True)
    assert [t.get_text() for t in status.get_xticklabels()] == list(labels)
    assert [b.get_height() for b in status.patches] == list(counts)
    assert "30 sources" in fig._suptitle.get_text()




def test_batch_frames_match_a_full_matplotlib_draw(cube, points):
    """Every frame of the batch renderer (background restored, axes and texts from its caches) against a
    fresh full draw of the same figure: the same pictures but for text placed to the whole pixel."""
    span = longest_time_span(cube)
    fast, full = SourceFigure(time_span=span), SourceFigure(time_span=span)
    writer, canvas = FrameWriter(fast.fig, fast.dynamic_artists, fast.frame_keys), FigureCanvasAgg(full.fig)
    order = _measured(cube)[:12] * 2  # the second pass draws from warm caches
    previous = None
    for i in order:
        fast.show(points.points(i))
        full.show(points.points(i))
        frame = block_means(writer.frame())
        canvas.draw()
        reference = block_means(np.asarray(canvas.buffer_rgba()))
        assert np.abs(frame - reference).max() < 64, points.names[i]
        if previous is not None and previous[0] != i:  # and the measure does tell sources apart
            assert np.abs(frame - previous[1]).max() > 100
        previous = (i, reference)


def test_plot_cube_writes_the_summary_and_every_source(sim_run, cube, points, tmp_path):
    paths = plot_cube(sim_run, None, tmp_path / "all", workers=2)
    names = list(cube["source"].values.astype(str))
    assert [p.name for p in paths] == ["summary.png"] + [f"{n}.png" for n in names]
    assert Image.open(paths[0]).size == (1100, 800)
    # each file holds its own source: the same picture as drawn here in one process
    figure = SourceFigure(time_span=longest_time_span(cube))
    writer = FrameWriter(figure.fig, figure.dynamic_artists, figure.frame_keys)
    for i, path in enumerate(paths[1:]):
        figure.show(points.points(i))
        np.testing.assert_array_equal(np.asarray(Image.open(path)), writer.frame(), err_msg=path.name)

    subset = plot_cube(sim_run, [names[3], names[0]], tmp_path / "two", workers=1)
    assert [p.name for p in subset] == ["summary.png", f"{names[3]}.png", f"{names[0]}.png"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted([NAME_MAP, *(p.name for p in subset)])
    with pytest.raises(ConfigError, match="nobody"):
        plot_cube(sim_run, ["nobody"], tmp_path / "none")


def test_upper_limits_follow_the_cubes_quality_rules(sim_run, tmp_path):
    """After `spxbatch qc` with another SNR threshold, what is drawn as an upper limit follows it."""
    requalified = tmp_path / "qc.zarr"
    requalify(sim_run, {"snr_threshold": 3.0}, requalified)
    ds = open_cube(requalified).load()
    p = CubePoints(ds)
    snr = ds["snr"].values
    assert p.upper.any() and np.all(snr[p.upper] < 3.0) and np.all(snr[p.obs["good"]] >= 3.0)
    assert (CubePoints(open_cube(sim_run).load()).upper & (snr >= 3.0)).any()  # the run's own rule was 5


def test_source_rows_reads_a_block_of_sources(cube):
    sub = source_rows(cube, 3, 7)
    assert sub["source"].values.tolist() == cube["source"].values[3:7].tolist()
    assert sub.sizes["obs"] == cube["row_size"].values[3:7].sum() and sub["obs_start"].values[0] == 0
    first = int(cube["obs_start"].values[3])
    np.testing.assert_array_equal(sub["flux"].values, cube["flux"].values[first:first + sub.sizes["obs"]])


def test_exports_round_trip(cube, tmp_path):
    paths = export_csv(cube, tmp_path / "csv")
    measured = cube["source"].values[cube["row_size"].values > 0].astype(str)
    assert sorted(p.stem for p in paths) == sorted(measured)
    for name in measured:
        lc = pd.read_csv(tmp_path / "csv" / f"{name}.csv")
        src = cube.spx.source(name)
        assert list(lc.columns[:15]) == ["obs_id", "mjd", "flux", "flux_error", "mag_ab", "mag_ab_error",
                                         "wavelength", "bandwidth", "band", "flag", "flag_binary", "pix_x",
                                         "pix_y", "is_upper_limit", "snr"]
        order = np.argsort(src["mjd"].values, kind="stable")
        for col, var in (("flux", "flux"), ("flux_error", "flux_err"), ("mjd", "mjd"),
                         ("wavelength", "wavelength"), ("pix_x", "x")):
            np.testing.assert_allclose(lc[col], src[var].values[order], rtol=1e-12)
        assert lc["obs_id"].tolist() == src["obs_id"].values[order].tolist()
        assert lc["band"].tolist() == [f"D{b}" for b in src["band"].values[order]]
        assert lc["flag"].tolist() == src["flags"].values[order].tolist()

    pq = pd.read_parquet(export_parquet(cube, tmp_path / "all.parquet"))
    for var in ("flux", "flux_err", "wavelength", "mjd", "good", "condition"):
        np.testing.assert_array_equal(pq[var], cube[var].values)
    np.testing.assert_array_equal(pq["source"], cube["source"].values[cube["source_index"].values])

    vt = Table.read(export_votable(cube, tmp_path / "all.xml"), format="votable")
    np.testing.assert_allclose(vt["lambda"], cube["wavelength"].values)
    np.testing.assert_allclose(vt["lambda_width"], cube["bandwidth"].values)
    np.testing.assert_allclose(vt["flux_err"], cube["flux_err"].values)
    assert str(vt["flux"].unit) == "uJy"
    np.testing.assert_array_equal(vt["flags"], cube["flags"].values.astype(np.int64) | cube["condition"].values)
    assert list(vt["obs_id"]) == list(cube["obs_id"].values)


@pytest.mark.parametrize(("lo", "hi", "scale", "expected"), [
    (3.2, 347.0, "linear", (0.0, 400.0)),
    (-12.5, 95.0, "linear", (-15.0, 100.0)),
    (-80.0, -3.0, "linear", (-80.0, 0.0)),
    (1234.0, 5678.0, "linear", (0.0, 6000.0)),
    (3.0, 470.0, "log", (1.0, 1000.0)),
    (12.3, 14.1, "mag", (12.0, 14.5)),
])
def test_axis_limits_are_round_and_enclose_the_data(lo, hi, scale, expected):
    from spxbatch.figures.plots import nice_limits

    assert nice_limits(lo, hi, scale) == pytest.approx(expected)


def test_time_limits_enclose_the_observations():
    from spxbatch.figures.plots import time_limits

    first, last = 60796.4, 60857.9
    lo, hi = time_limits(first, last)
    assert lo < first and hi > last and (lo, hi) == (60780.0, 60880.0)
