"""Temporal warp error (docs/metrics.md), streamed two frames at a time.

For consecutive frames t-1, t the optical flow is computed on the SOURCE frames (OpenCV
DIS, no weights, CPU), so an edit is judged against the source's own motion: the
edited frame t-1 is warped to t along that flow and compared with the edited frame t,

    err_t = mean |edit_t - warp(edit_{t-1}, flow_src(t -> t-1))|     (0..255 scale)

over the pixels whose warp source lies inside the frame (optionally only inside the
face region). The same number for the source itself (warping source t-1) is the
baseline: what flow error and disocclusions cost even with no edit. An edit that
flickers raises its error above the source's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# DIS presets (OpenCV's ultrafast / fast / medium); "medium", the default, trades speed
# for accuracy sensibly on a CPU.
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
DEFAULT_PRESET = "medium"


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def backward_flow(dis: cv2.DISOpticalFlow, gray_prev: np.ndarray, gray_cur: np.ndarray):
    """Flow (H, W, 2) float32 that maps each pixel x of the current frame to where it
    was in the previous one: cur(x) ~ prev(x + flow(x)). (DIS ``calc(I0, I1)`` returns
    the flow with I0(x) ~ I1(x + flow), so I0 is the current frame.)"""
    return dis.calc(gray_cur, gray_prev, None)


@dataclass
class Warper:
    """Sampling maps for one flow field: ``warp(prev)`` brings a frame t-1 to t."""

    map_x: np.ndarray  # (H, W) float32
    map_y: np.ndarray
    inside: np.ndarray  # (H, W) bool: the sample point lies inside the frame

    @classmethod
    def from_flow(cls, flow: np.ndarray) -> "Warper":
        h, w = flow.shape[:2]
        ys, xs = np.indices((h, w), dtype=np.float32)
        map_x = xs + flow[..., 0]
        map_y = ys + flow[..., 1]
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        return cls(map_x, map_y, inside)

    def warp(self, image: np.ndarray) -> np.ndarray:
        return cv2.remap(image, self.map_x, self.map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def error(self, prev: np.ndarray, cur: np.ndarray, region: np.ndarray | None = None) -> float:
        """Mean |cur - warp(prev)| over channels and the pixels inside the frame (and
        inside ``region`` (H, W) bool if given); NaN when no pixel is left."""
        keep = self.inside if region is None else (self.inside & region)
        if not keep.any():
            return float("nan")
        diff = np.abs(cur.astype(np.float32) - self.warp(prev).astype(np.float32))
        return float(diff[keep].mean())


def face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Convex hull of the 68 landmarks (68, 2) frame px -> (H, W) bool mask."""
    mask = np.zeros(shape, dtype=np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


@dataclass
class WarpStep:
    """Warp errors of one frame t >= 1 (NaN where undefined)."""

    source: float
    edited: float
    source_face: float = float("nan")
    edited_face: float = float("nan")


class WarpErrorMeter:
    """Feed frames in order with ``update``; keeps only the previous pair.

    ``update(src, edit, landmarks=None)`` takes (H, W, 3) uint8 RGB frames of the source
    and the edit and the source's landmarks (68, 2) for frame t (None = no face), and
    returns the ``WarpStep`` for t, or None for the first frame."""

    def __init__(self, preset: str = DEFAULT_PRESET):
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; one of {sorted(DIS_PRESETS)}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def update(
        self, src: np.ndarray, edit: np.ndarray, landmarks: np.ndarray | None = None
    ) -> WarpStep | None:
        if src.shape != edit.shape:
            raise ValueError(f"source and edited frames differ in size: {src.shape} vs {edit.shape}")
        gray = to_gray(src)
        prev, self._prev = self._prev, (gray, src, edit)
        if prev is None:
            return None
        prev_gray, prev_src, prev_edit = prev
        if prev_gray.shape != gray.shape:
            raise ValueError("frame size changed inside the video")
        warper = Warper.from_flow(backward_flow(self._dis, prev_gray, gray))
        step = WarpStep(source=warper.error(prev_src, src), edited=warper.error(prev_edit, edit))
        if landmarks is not None and np.isfinite(landmarks).all():
            region = face_region(landmarks, gray.shape)
            step.source_face = warper.error(prev_src, src, region)
            step.edited_face = warper.error(prev_edit, edit, region)
        return step


def nanmean(values) -> float:
    """Mean of the finite values, NaN if there are none (no RuntimeWarning)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")
