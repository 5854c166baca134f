"""PSNR of an edited frame against its original, over the whole frame or a region.

``score`` reports it inside the face region (the convex hull of the 68 landmarks, the
same region as the face warp error): for an edit at scale 0 it is the reconstruction
PSNR of encode -> decode -> paste; for a real edit, how much of the face
changed. Images are (H, W, 3) uint8; the error is averaged over every channel of every
pixel in the region.
"""

from __future__ import annotations

import numpy as np

PEAK = 255.0
# Identical pixels have no finite PSNR; they count as this many dB (above anything a
# lossy codec gives), so means over frames stay finite.
PSNR_IDENTICAL = 100.0


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """PSNR in dB of ``b`` against ``a`` (H, W, C) uint8, over ``region`` (H, W) bool
    (None: every pixel). NaN for an empty region; ``PSNR_IDENTICAL`` when equal."""
    diff = a.astype(np.float32) - b.astype(np.float32)
    if region is not None:
        diff = diff[region]
    if diff.size == 0:
        return float("nan")
    mse = float(np.mean(np.square(diff, dtype=np.float64)))
    if mse == 0.0:
        return PSNR_IDENTICAL
    return min(PSNR_IDENTICAL, 10.0 * np.log10(PEAK * PEAK / mse))
