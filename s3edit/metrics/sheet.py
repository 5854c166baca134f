"""Contact sheets: the face in a few frames of the original above the same frames of
the edit, as one PNG (``s3edit score --sheet``): what an edit did, at a glance.

Frames are picked evenly over the frames with a face. Each tile is a square around the
face (the landmarks' box, widened by ``MARGIN`` and clipped to the frame), resized to
``tile`` pixels; the same box cuts the original and the edit, so the two rows line up.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from s3edit.paths import atomic_path

MARGIN = 1.8  # tile side = MARGIN x the larger side of the landmarks' box (hair, chin, glasses)
DEFAULT_FRAMES = 6
DEFAULT_TILE = 192
LABEL_HEIGHT = 22  # px of the caption band above each column


def pick_frames(valid: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` frame indices spread evenly over the frames where ``valid`` (N,) is set."""
    faces = np.flatnonzero(valid)
    if k <= 0 or not len(faces):
        return []
    picks = np.unique(np.round(np.linspace(0, len(faces) - 1, min(k, len(faces)))).astype(int))
    return [int(faces[p]) for p in picks]


def face_box(landmarks: np.ndarray, shape: tuple[int, int], margin: float = MARGIN) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around the (68, 2) landmarks in frame px, clipped to
    the frame ``shape`` (H, W)."""
    h, w = shape
    lo, hi = landmarks.min(0), landmarks.max(0)
    centre = (lo + hi) / 2
    half = max(float((hi - lo).max()) * margin / 2, 4.0)
    x0, y0 = np.floor(centre - half).astype(int)
    x1, y1 = np.ceil(centre + half).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def tile(image: np.ndarray, box: tuple[int, int, int, int], size: int = DEFAULT_TILE) -> np.ndarray:
    """The ``box`` of an (H, W, 3) uint8 image, letterboxed to a ``size`` square."""
    x0, y0, x1, y1 = box
    patch = image[y0:y1, x0:x1]
    scale = size / max(patch.shape[:2])
    new = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
    patch = cv2.resize(patch, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    out = np.zeros((size, size, 3), np.uint8)
    oy, ox = (size - patch.shape[0]) // 2, (size - patch.shape[1]) // 2
    out[oy:oy + patch.shape[0], ox:ox + patch.shape[1]] = patch
    return out


def _caption(text: str, width: int) -> np.ndarray:
    band = np.full((LABEL_HEIGHT, width, 3), 255, np.uint8)
    cv2.putText(band, text, (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], columns: list[str]) -> np.ndarray:
    """Rows of equal-size tiles (name, tiles) under one caption per column -> (H, W, 3)
    uint8 RGB. Each row starts with a caption band holding its name."""
    size = rows[0][1][0].shape[0]
    header = np.hstack([_caption(c, size) for c in columns])
    parts = [header]
    for name, tiles in rows:
        parts.append(_caption(name, size * len(columns)))
        parts.append(np.hstack(tiles))
    return np.vstack(parts)


def write_sheet(sheet: np.ndarray, path: str | os.PathLike) -> None:
    """An (H, W, 3) uint8 RGB sheet as a PNG, written atomically."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the contact sheet as PNG")
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(png.tobytes())
