"""Video input/output on PyAV (see ``s3edit.video.io``)."""

from s3edit.video.io import (
    DEFAULT_CRF,
    Frame,
    SourceInfo,
    VideoInfo,
    VideoWriter,
    iter_frames,
    probe,
    source_info,
)

__all__ = [
    "DEFAULT_CRF",
    "Frame",
    "SourceInfo",
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "probe",
    "source_info",
]
