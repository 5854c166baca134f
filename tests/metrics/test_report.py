"""The score report: JSON (NaN -> null), table rows, plot file."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from s3edit.metrics.report import ATTR_HEADS_MISSING, FrameSeries, ScoreReport, render_table, write_plot


def make_report(**extra) -> ScoreReport:
    n = 6
    nan_first = np.r_[np.nan, np.linspace(0.9, 1.0, n - 1)]
    series = FrameSeries(np.linspace(0.9, 1.0, n), nan_first, nan_first,
                         np.r_[np.nan, np.ones(n - 1)], np.r_[np.nan, 2 * np.ones(n - 1)],
                         np.full(n, 38.5))
    return ScoreReport(original="a.mp4", edited="b.mp4", id_net="net (test)",
                       landmarks_from="detected", n_frames=n, n_face_frames=n, id_preserve=0.95,
                       tl_id=1.001, tg_id=0.999, warp_source=1.0, warp_edited=2.0,
                       warp_source_face=float("nan"), warp_edited_face=float("nan"),
                       psnr_face=38.5, psnr_face_worst=37.25, series=series, **extra)


def text(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_json_has_nulls_for_nan_and_says_why_tacr_is_missing():
    data = json.loads(json.dumps(make_report().to_dict()))
    assert data["warp_source_face"] is None and data["per_frame"]["adjacent_source"][0] is None
    assert data["tacr"] is None and ATTR_HEADS_MISSING in data["notes"]
    assert "per_frame" not in make_report().to_dict(per_frame=False)


def test_table_rows_with_and_without_attribute_heads():
    plain = text(render_table(make_report()))
    assert "net (test)" in plain and "1.0010" in plain and "need attribute heads" in plain
    assert "PSNR (face)" in plain and "38.50" in plain and "worst frame 37.25" in plain
    assert "0.9941 / 0.9986 / 0.996" in plain  # TL-ID: DVA / S3Editor / STIT
    with_heads = text(render_table(make_report(attribute="Eyeglasses", tacr=0.5, napr=0.75)))
    assert "TACR (Eyeglasses)" in with_heads and "0.500" in with_heads and "0.7500" in with_heads
    assert "need attribute heads" not in with_heads
    flips = text(render_table(make_report(attribute="Eyeglasses", tacr=0.5, napr=0.25,
                                          flips={"Smiling": 0.5, "Male": 0.0, "Young": 0.75})))
    assert "flipped: Smiling 0.50, Young 0.75" in flips and "Male" not in flips


def test_plot_is_a_png(tmp_path):
    out = tmp_path / "plot.png"
    write_plot(make_report(), out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary left
