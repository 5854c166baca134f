"""The ``score`` report: one dataclass, shown as a rich table, JSON, or a per-frame plot.

Paper figures (VoxCeleb, 256², ArcFace identity; docs/metrics.md) are printed beside
ours for orientation only: they were measured with another identity net on other clips,
so compare trends (≈1 for TL/TG-ID, higher ID-Preserve is better), not digits.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.table import Table

from s3edit.paths import atomic_path

# (TL-ID, TG-ID, ID-Preserve, TACR, NAPR) per method as S3Editor's paper (Wang et al.,
# 2024) reports them: VoxCeleb 256², ArcFace.
PAPER_FIGURES: dict[str, dict[str, float]] = {
    "DVA": {"tl_id": 0.9941, "tg_id": 0.9923, "id_preserve": 0.9169, "tacr": 0.046, "napr": 0.9460},
    "S3Editor": {"tl_id": 0.9986, "tg_id": 0.9972, "id_preserve": 0.9456, "tacr": 0.066,
                 "napr": 0.9561},
    "STIT": {"tl_id": 0.996, "tg_id": 0.991, "id_preserve": 0.8539, "tacr": 0.015, "napr": 0.911},
}
ATTR_HEADS_MISSING = "TACR/NAPR: need attribute heads (pass --weights W --attr NAME)"
REPORT_FORMAT = "s3edit-score"
REPORT_VERSION = 1


@dataclass
class FrameSeries:
    """Per-frame values, each (N,) float64, NaN where undefined (no face, first frame)."""

    id_to_source: np.ndarray  # cos(ID(edited_i), ID(original_i))
    adjacent_source: np.ndarray  # cos(ID(original_{i-1}), ID(original_i))
    adjacent_edited: np.ndarray  # cos(ID(edited_{i-1}), ID(edited_i))
    warp_source: np.ndarray  # warp error of the source itself (baseline), 0..255
    warp_edited: np.ndarray  # warp error of the edit along the source's flow
    psnr_face: np.ndarray  # PSNR (dB) of the edited face against the original's


@dataclass
class ScoreReport:
    original: str
    edited: str
    id_net: str  # the identity net's name
    landmarks_from: str  # "job" (the original's align stage) or "detected"
    n_frames: int
    n_face_frames: int
    id_preserve: float
    tl_id: float
    tg_id: float
    warp_source: float  # mean warp error over frames 1..N-1, whole frame
    warp_edited: float
    warp_source_face: float  # the same inside the face region
    warp_edited_face: float
    psnr_face: float  # mean over face frames of the PSNR inside the face region, dB
    psnr_face_worst: float  # the lowest frame's
    series: FrameSeries
    attribute: str | None = None  # TACR/NAPR are set only with attribute heads
    tacr: float | None = None
    napr: float | None = None
    flips: dict[str, float] | None = None  # per other attribute: share of frames its label flipped
    notes: list[str] = field(default_factory=list)

    def to_dict(self, per_frame: bool = True) -> dict:
        """JSON-ready dict (NaN -> null)."""
        data = asdict(self)
        series = data.pop("series")
        data = {"format": REPORT_FORMAT, "version": REPORT_VERSION, **data}
        if self.tacr is None:
            data["notes"] = [*self.notes, ATTR_HEADS_MISSING]
        data["paper_figures"] = PAPER_FIGURES
        if per_frame:
            data["per_frame"] = {k: np.asarray(v).tolist() for k, v in series.items()}
        return _nan_to_none(data)


def _nan_to_none(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _paper(key: str) -> str:
    return " / ".join(f"{fig[key]:g}" for fig in PAPER_FIGURES.values())


def render_table(report: ScoreReport) -> Table:
    """The report as a rich table: metric, value, baseline/notes, paper figures (dim)."""
    table = Table(
        title=f"s3edit score — identity net: {report.id_net}",
        caption=(f"{report.n_face_frames}/{report.n_frames} frames with a face "
                 f"(landmarks: {report.landmarks_from}). Papers: VoxCeleb, ArcFace — "
                 "orientation only."),
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("baseline / meaning")
    table.add_column("papers: " + " / ".join(PAPER_FIGURES), style="dim")
    table.add_row("ID-Preserve", _fmt(report.id_preserve), "1 = same person as the source",
                  _paper("id_preserve"))
    table.add_row("TL-ID", _fmt(report.tl_id), "≈1 = as steady as the source",
                  _paper("tl_id"))
    table.add_row("TG-ID", _fmt(report.tg_id), "≈1 = as steady (all frame pairs)",
                  _paper("tg_id"))
    if report.tacr is not None:
        table.add_row(f"TACR ({report.attribute})", _fmt(report.tacr, 3),
                      "frames moved to the target", _paper("tacr"))
        flipped = ", ".join(f"{name} {share:.2f}" for name, share in (report.flips or {}).items()
                            if math.isfinite(share) and share > 0)
        table.add_row("NAPR", _fmt(report.napr), "frames keeping the others"
                      + (f"; flipped: {flipped}" if flipped else ""), _paper("napr"))
    else:
        table.add_row("TACR / NAPR", "—", "need attribute heads: pass --weights W --attr NAME", "")
    table.add_row("PSNR (face)", _fmt(report.psnr_face, 2),
                  f"dB, worst frame {_fmt(report.psnr_face_worst, 2)}; at scale 0: the reconstruction", "")
    table.add_row("warp error (frame)", _fmt(report.warp_edited, 2),
                  f"source {_fmt(report.warp_source, 2)} (0–255)", "")
    table.add_row("warp error (face)", _fmt(report.warp_edited_face, 2),
                  f"source {_fmt(report.warp_source_face, 2)}", "")
    return table


def _similarity_limits(ax, values: np.ndarray) -> None:
    """Cosine axes from at most 0.9 (lower if the data go lower) to just above 1, with
    plain tick labels: identical videos then plot as a flat line at 1, not as noise."""
    finite = values[np.isfinite(values)]
    low = min(0.9, float(finite.min()) - 0.01) if finite.size else 0.9
    ax.set_ylim(low, 1.005)
    ax.ticklabel_format(axis="y", useOffset=False)


def write_plot(report: ScoreReport, path: str | os.PathLike) -> None:
    """Per-frame PNG: identity similarity to the source, adjacent-frame similarity
    (edited vs source), warp error (edited vs source), PSNR inside the face. Written
    atomically."""
    # A bare Figure renders with Agg and touches no global pyplot state (no display).
    from matplotlib.figure import Figure

    s = report.series
    frames = np.arange(report.n_frames)
    fig = Figure(figsize=(10, 10), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    source_style = {"color": "tab:gray", "linewidth": 3, "alpha": 0.5, "label": "source"}
    axes[0].plot(frames, s.id_to_source, color="tab:blue", label="cos(edited, original)")
    axes[0].set_ylabel("identity to source")
    axes[1].plot(frames, s.adjacent_source, **source_style)
    axes[1].plot(frames, s.adjacent_edited, color="tab:orange", label="edited")
    axes[1].set_ylabel("adjacent-frame similarity")
    for ax, values in ((axes[0], s.id_to_source), (axes[1], s.adjacent_edited)):
        _similarity_limits(ax, np.concatenate([values, s.adjacent_source]))
    axes[2].plot(frames, s.warp_source, **source_style)
    axes[2].plot(frames, s.warp_edited, color="tab:red", label="edited")
    axes[2].set_ylabel("warp error (0–255)")
    axes[2].set_ylim(bottom=0)
    axes[3].plot(frames, s.psnr_face, color="tab:green", label="edited face vs original")
    axes[3].set_ylabel("PSNR in the face (dB)")
    axes[3].set_xlabel("frame")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    fig.suptitle(f"{os.path.basename(report.edited)} vs {os.path.basename(report.original)} "
                 f"— {report.id_net}", fontsize="medium")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
