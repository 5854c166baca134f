"""Metrics of DESIGN §5 for ``score``: identity consistency (TL-ID, TG-ID, ID-Preserve),
attribute change (TACR, NAPR) and temporal warp error, plus the report they fill."""

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
