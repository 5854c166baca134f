"""Contact sheet of aligned crops: a quick visual check of an align job.

A grid (4 x 4 by default) of crops sampled evenly over the frames that have one, each
with its smoothed landmarks drawn (green dots; the FFHQ eye and mouth points the quad
is built from in red) and its frame index in the corner. The align stage writes it to
the job (``align --preview``)."""

from __future__ import annotations

import cv2
import numpy as np

from s3edit.face.landmarks import EYES, MOUTH_LEFT_CORNER, MOUTH_RIGHT_CORNER

GRID = 4  # tiles per side
TILE = 256  # tile side in pixels (crops of other sizes are resized)
QUAD_POINTS = [*EYES, MOUTH_RIGHT_CORNER, MOUTH_LEFT_CORNER]


def sample_frames(valid: np.ndarray, count: int = GRID * GRID) -> np.ndarray:
    """Up to ``count`` frame indices spread evenly over the valid (N,) frames."""
    idx = np.flatnonzero(valid)
    if len(idx) <= count:
        return idx
    return idx[np.round(np.linspace(0, len(idx) - 1, count)).astype(int)]


def draw_tile(crop: np.ndarray, landmarks: np.ndarray, label: str) -> np.ndarray:
    """One tile: crop (S, S, 3) uint8 RGB with landmarks (68, 2) crop px drawn."""
    scale = TILE / crop.shape[0]
    tile = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA) if scale != 1 else crop.copy()
    points = np.round((landmarks + 0.5) * scale - 0.5).astype(int)
    for k, (x, y) in enumerate(points):
        colour = (255, 40, 40) if k in QUAD_POINTS else (40, 255, 40)
        cv2.circle(tile, (int(x), int(y)), 2, colour, -1, lineType=cv2.LINE_AA)
    cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheet(crops: list[np.ndarray], landmarks: np.ndarray, labels: list[str],
                  grid: int = GRID) -> np.ndarray:
    """Tiles in a ``grid``-wide sheet: (rows * TILE, grid * TILE, 3) uint8 RGB."""
    tiles = [draw_tile(c, lm, lb) for c, lm, lb in zip(crops, landmarks, labels)]
    rows = max(1, -(-len(tiles) // grid))
    sheet = np.zeros((rows * TILE, grid * TILE, 3), np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, grid)
        sheet[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = tile
    return sheet
