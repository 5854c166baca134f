"""Face-region mask in crop space, from the 68 landmarks of the *original* crop.

The region is the convex hull of the jaw line and the brows lifted by a forehead band,
so it covers chin, cheeks, mouth, nose, eyes, brows and the lower forehead, and leaves
hair, ears, neck and background out (DVA keeps a similar set of face-parsing classes).
It is then dilated and feathered as STIT does (grow by r, blur with a 2r+1 kernel) so
the pasted face has no seam. Paste always uses this mask; training uses DVA's face
parser instead where the weight set has one (``DVA.face_mask``).

Masks are ``(N, size, size)`` float32 in [0, 1], 1 = take the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from s3edit.face.landmarks import BROWS, JAW

REFERENCE_SIZE = 256  # crop size the pixel defaults below are stated for
# Our choices, at a 256 px crop (scaled with the crop size): grow the hull by 8 px,
# then feather over a 17 px (2 * 8 + 1) Gaussian kernel as STIT's blur(2r+1).
DEFAULT_DILATE_PX = 8
DEFAULT_FEATHER_PX = 8
# Forehead band: brows lifted by this fraction of the brow-to-chin distance, along the
# chin-to-brow direction (about a third of the forehead; the hairline varies too much
# for a landmark rule to go higher).
FOREHEAD_BAND = 0.35
CHIN = 8  # jaw point at the bottom of the chin
# Fixed-point bits for cv2.fillPoly, so polygon vertices keep sub-pixel precision.
SHIFT_BITS = 4


@dataclass(frozen=True)
class MaskConfig:
    """Dilation and feathering in crop pixels; None = the default scaled to the crop
    size (8 px each at 256 px)."""

    dilate: int | None = None
    feather: int | None = None

    def resolved(self, size: int) -> tuple[int, int]:
        scale = size / REFERENCE_SIZE
        dilate = self.dilate if self.dilate is not None else round(DEFAULT_DILATE_PX * scale)
        feather = self.feather if self.feather is not None else round(DEFAULT_FEATHER_PX * scale)
        if dilate < 0 or feather < 0:
            raise ValueError("dilate and feather must be >= 0 pixels")
        return int(dilate), int(feather)


def face_polygons(crop_landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) crop px -> (N, 27, 2) points whose convex hull is the face region:
    the 17 jaw points and the 10 brow points lifted by the forehead band."""
    lm = np.asarray(crop_landmarks, dtype=np.float64)
    brows = lm[:, BROWS]
    brow_centre = brows.mean(axis=1)  # (N, 2)
    up = brow_centre - lm[:, CHIN]
    length = np.linalg.norm(up, axis=-1, keepdims=True)
    lift = FOREHEAD_BAND * up  # FOREHEAD_BAND * |brow-chin| along chin -> brow
    lift = np.where(length > 0, lift, 0.0)
    return np.concatenate([lm[:, JAW], brows + lift[:, None, :]], axis=1)


def hard_face_mask(crop_landmarks: np.ndarray, size: int) -> np.ndarray:
    """(N, 68, 2) crop px -> (N, size, size) uint8 {0, 1}, before dilation/feathering.
    Frames whose landmarks are not finite get an empty mask."""
    polys = face_polygons(crop_landmarks)
    out = np.zeros((len(polys), size, size), np.uint8)
    scale = 1 << SHIFT_BITS
    for mask, poly in zip(out, polys):  # one cv2 call per frame; no per-pixel Python
        if not np.isfinite(poly).all():
            continue
        hull = cv2.convexHull(np.round(poly * scale).astype(np.int32))
        cv2.fillPoly(mask, [hull], 1, lineType=cv2.LINE_8, shift=SHIFT_BITS)
    return out


def soften(masks: np.ndarray, dilate: int, feather: int) -> np.ndarray:
    """Dilate by ``dilate`` px (elliptical kernel) and blur with a (2*feather+1)
    Gaussian kernel: (N, S, S) uint8/float -> (N, S, S) float32 in [0, 1]."""
    out = np.empty(masks.shape, np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    for i, mask in enumerate(masks):
        m = mask.astype(np.float32)
        if dilate > 0:
            m = cv2.dilate(m, kernel)
        if feather > 0:
            m = cv2.GaussianBlur(m, (2 * feather + 1, 2 * feather + 1), 0,
                                 borderType=cv2.BORDER_CONSTANT)
        out[i] = m
    return np.clip(out, 0.0, 1.0)


def face_mask(
    crop_landmarks: np.ndarray, size: int, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """Soft face masks for aligned crops.

    crop_landmarks: (N, 68, 2) landmarks of the original crops, crop pixels ->
    (N, size, size) float32 in [0, 1] (1 = face)."""
    dilate, feather = config.resolved(size)
    return soften(hard_face_mask(crop_landmarks, size), dilate, feather)


def eye_band(crop_landmarks: np.ndarray, size: int, pad: float | tuple[float, float] = 0.5) -> np.ndarray:
    """(N, 68, 2) crop px -> (N, size, size) bool: the box around the 12 eye landmarks
    widened by ``pad`` times the eye distance on every side, where glasses go (used to
    check that an Eyeglasses edit changes the eyes' region, not the whole face)."""
    lnd = torch.from_numpy(np.asarray(crop_landmarks, np.float32))
    return eye_band_t(lnd, size, pad).numpy()


def eye_band_t(crop_landmarks: torch.Tensor, size: int, pad: float | tuple[float, float] = 0.5) -> torch.Tensor:
    """``eye_band`` on tensors (batched, on the landmarks' device): (N, 68, 2) crop px
    -> (N, size, size) bool. ``pad``: one widening on every side, or (across, up and
    down), in eye distances."""
    eyes = crop_landmarks[:, 36:48].float()
    lo, hi = eyes.amin(1), eyes.amax(1)
    pad_xy = torch.as_tensor(pad if isinstance(pad, tuple) else (pad, pad), dtype=torch.float32, device=eyes.device)
    margin = pad_xy * (eyes[:, 6:].mean(1) - eyes[:, :6].mean(1)).norm(dim=1, keepdim=True)
    lo, hi = lo - margin, hi + margin
    grid = torch.arange(size, dtype=torch.float32, device=eyes.device)
    inside_x = (grid[None] >= lo[:, :1]) & (grid[None] <= hi[:, :1])
    inside_y = (grid[None] >= lo[:, 1:]) & (grid[None] <= hi[:, 1:])
    return inside_y[:, :, None] & inside_x[:, None, :]


# --- attribute regions: where an attribute's edit may change a crop -----------------------

# Attributes whose edit is local, with the region it may change: a box around the 12 eye
# landmarks widened by (across, up and down) eye distances. (0.75, 0.4) holds every pixel
# the classic glasses of ``s3edit.portraits.glasses`` draw, temples to the face's edge
# included (tests/face/test_mask.py), and leaves out the cheeks and most of the brows,
# which an edit of the small default model darkens. Attributes not listed may change
# the whole crop.
ATTRIBUTE_REGIONS: dict[str, tuple[float, float]] = {"Eyeglasses": (0.75, 0.4)}
# Soft edge of an edit region: Gaussian sigma as a share of the crop side (1 px at 64 px,
# 4 px at 256 px), so a confined edit has no seam.
REGION_FEATHER = 1 / 64


def attribute_region(name: str, crop_landmarks: torch.Tensor, size: int) -> torch.Tensor | None:
    """The box attribute ``name``'s edit may change: (N, 68, 2) crop px of a ``size``
    crop -> (N, size, size) bool; None for an attribute without a known region."""
    pad = ATTRIBUTE_REGIONS.get(name)
    return None if pad is None else eye_band_t(crop_landmarks, size, pad)


def edit_region(names: list[str], crop_landmarks: torch.Tensor, size: int) -> torch.Tensor | None:
    """The soft region an edit of ``names`` is confined to (``edit --region auto``): the
    union of their regions, feathered -> (N, 1, size, size) float in [0, 1]; None
    (the whole crop) when any of them has no known region."""
    import kornia

    boxes = [attribute_region(n, crop_landmarks, size) for n in names]
    if not boxes or any(b is None for b in boxes):
        return None
    hard = torch.stack(boxes).any(0)[:, None].float()
    sigma = REGION_FEATHER * size
    kernel = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(hard, (kernel, kernel), (sigma, sigma), border_type="replicate")
