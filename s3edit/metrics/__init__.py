"""Metrics of ``score`` (docs/metrics.md): identity consistency (TL-ID, TG-ID,
ID-Preserve), attribute change (TACR, NAPR), temporal warp error and PSNR in the face,
plus the report they fill."""

from s3edit.metrics.identity import id_preserve, identity_series, napr, tacr, tg_id, tl_id
from s3edit.metrics.report import ScoreReport
from s3edit.metrics.warp import WarpErrorMeter

__all__ = [
    "ScoreReport",
    "WarpErrorMeter",
    "id_preserve",
    "identity_series",
    "napr",
    "tacr",
    "tg_id",
    "tl_id",
]
