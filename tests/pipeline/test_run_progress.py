"""The progress bar: what it counts from each finished task's summary, and what it shows."""

from __future__ import annotations

from spxbatch.pipeline.progress import RunProgress

SUMMARIES = [{"measured": 5, "bytes": 2_000_000, "error": None}, {"measured": 0, "bytes": 500_000, "error": "HTTP 500"},
             {"measured": 3, "bytes": 0}]


def test_counts_without_display(capsys):
    with RunProgress(total_images=3, enabled=False) as p:
        for s in SUMMARIES:
            p.update(s)
    assert (p.measured, p.bytes, p.failed) == (8, 2_500_000, 1)
    assert capsys.readouterr().err == ""


def test_staging_counts_files_fetched():
    with RunProgress(total_images=2, enabled=False, counted="files fetched", count_key="fetched") as p:
        p.update({"fetched": 2, "bytes": 10})
        p.update({"fetched": 1, "bytes": 5, "error": "x"})
    assert p.measured == 3 and p.failed == 1 and "3 files fetched" in p._stats()


def test_display_shows_dashboard_and_totals(capsys):
    with RunProgress(total_images=3, dashboard="http://127.0.0.1:8787/status") as p:
        for s in SUMMARIES:
            p.update(s)
    err = capsys.readouterr().err
    assert "Dask dashboard: http://127.0.0.1:8787/status" in err
    assert "8 measurements, 2.5 MB read, 1 failed images" in err and "3/3" in err
