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


EYES = (36, 48)  # the 12 eye landmarks of the 68-point scheme
MOUTH = (48, 68)  # the 20 mouth landmarks (outer and inner lip)


def eye_band(crop_landmarks: np.ndarray, size: int, pad: float | tuple[float, ...] = 0.5) -> np.ndarray:
    """(N, 68, 2) crop px -> (N, size, size) bool: the box around the 12 eye landmarks
    widened by ``pad`` times the eye distance on every side, where glasses go (used to
    check that an Eyeglasses edit changes the eyes' region, not the whole face)."""
    lnd = torch.from_numpy(np.asarray(crop_landmarks, np.float32))
    return eye_band_t(lnd, size, pad).numpy()


def eye_band_t(crop_landmarks: torch.Tensor, size: int, pad: float | tuple[float, ...] = 0.5) -> torch.Tensor:
    """``eye_band`` on tensors (batched, on the landmarks' device): (N, 68, 2) crop px
    -> (N, size, size) bool. ``pad``: see ``landmark_box_t``."""
    return landmark_box_t(crop_landmarks, size, EYES, pad)


def eye_centres_t(crop_landmarks: torch.Tensor) -> torch.Tensor:
    """The centroids of the two eyes' six landmarks, image left first: (N, 68, 2) -> (N, 2, 2)."""
    lnd = crop_landmarks.float()
    return torch.stack([lnd[:, 36:42].mean(1), lnd[:, 42:48].mean(1)], 1)


def landmark_box_t(crop_landmarks: torch.Tensor, size: int, points: tuple[int, int],
                   pad: float | tuple[float, ...]) -> torch.Tensor:
    """The box around landmarks ``points`` = [start, stop) of the 68-point scheme,
    widened in units of the eye distance (distance of the two eyes' centres, the face's
    scale): ``pad`` is one widening on every side, (across, up and down), or (across,
    up, down). (N, 68, 2) crop px -> (N, size, size) bool."""
    lnd = crop_landmarks.float()
    box = lnd[:, points[0]:points[1]]
    lo, hi = box.amin(1), box.amax(1)
    centres = eye_centres_t(lnd)
    eye_distance = (centres[:, 1] - centres[:, 0]).norm(dim=1, keepdim=True)
    across, up, down = (pad, pad, pad) if not isinstance(pad, tuple) else \
        (pad[0], pad[1], pad[1]) if len(pad) == 2 else pad
    lo = lo - eye_distance * torch.tensor([across, up], dtype=torch.float32, device=lnd.device)
    hi = hi + eye_distance * torch.tensor([across, down], dtype=torch.float32, device=lnd.device)
    grid = torch.arange(size, dtype=torch.float32, device=lnd.device)
    inside_x = (grid[None] >= lo[:, :1]) & (grid[None] <= hi[:, :1])
    inside_y = (grid[None] >= lo[:, 1:]) & (grid[None] <= hi[:, 1:])
    return inside_y[:, :, None] & inside_x[:, None, :]


# --- attribute regions: where an attribute's edit may change a crop -----------------------


def eye_ellipses_t(crop_landmarks: torch.Tensor, size: int, axes: tuple[float, float]) -> torch.Tensor:
    """The two ellipses centred on the eyes' landmark centroids, along the eye line,
    with half-axes ``axes`` = (along, across) in eye distances:
    (N, 68, 2) crop px -> (N, size, size) bool."""
    centres = eye_centres_t(crop_landmarks)  # (N, 2, 2)
    line = centres[:, 1] - centres[:, 0]
    d = line.norm(dim=1).clamp_min(1e-6)  # (N,)
    u = line / d[:, None]  # unit along the eye line
    v = torch.stack([-u[:, 1], u[:, 0]], 1)  # unit across it
    grid = torch.arange(size, dtype=torch.float32, device=centres.device)
    xy = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1)  # (S, S, 2): x, y
    rel = xy[None, None] - centres[:, :, None, None]  # (N, 2, S, S, 2)
    a = (rel * u[:, None, None, None]).sum(-1) / (axes[0] * d)[:, None, None, None]
    b = (rel * v[:, None, None, None]).sum(-1) / (axes[1] * d)[:, None, None, None]
    return (a * a + b * b <= 1).any(1)


@dataclass(frozen=True)
class AttributeRegion:
    """Where an attribute's edit may change a crop: the box around landmarks ``points``
    widened by ``pad`` eye distances (``landmark_box_t``), less, when ``lenses`` is
    given, an ellipse round each eye with those half-axes (along and across the eye line,
    eye distances) that the edit keeps as it was: the eyes and the skin a clear lens
    shows."""

    points: tuple[int, int]
    pad: tuple[float, ...]
    lenses: tuple[float, float] | None = None

    def box(self, crop_landmarks: torch.Tensor, size: int) -> torch.Tensor:
        return landmark_box_t(crop_landmarks, size, self.points, self.pad)

    def kept(self, crop_landmarks: torch.Tensor, size: int) -> torch.Tensor | None:
        """The lenses the edit keeps as they were, (N, size, size) bool; None without."""
        return None if self.lenses is None else eye_ellipses_t(crop_landmarks, size, self.lenses)

    def describe(self) -> dict:
        out = {"points": list(self.points), "pad": list(self.pad)}
        return out if self.lenses is None else {**out, "lenses": list(self.lenses)}


# Attributes whose edit is local, with the region it may change. Eyeglasses: the eyes'
# box widened by 0.75 eye distances across and 0.4 up and down, which holds every pixel
# the classic glasses and the sunglasses of ``s3edit.portraits.glasses`` draw, temples to
# the face's edge included (tests/face/test_mask.py), and leaves out the cheeks and most
# of the brows, which an edit of the small default model darkens, less the kept lenses
# (LENSES); Sunglasses has the same box and keeps nothing. Smiling: the mouth's box widened by
# SMILE_PAD, which holds the corners of a smile (wider than the neutral mouth they are
# measured on), the cheeks beside them up to the nostrils and the chin below (docs/edit.md;
# the London pairs' differences, tests/face/test_mask.py). Attributes not listed may
# change the whole crop.
SMILE_PAD = (0.45, 0.4, 0.3)
# The eyes and the skin round them that a clear lens shows, which an Eyeglasses edit keeps
# as it was: an ellipse round each eye, 0.33 eye distances along the eye line and 0.17
# across it. It holds the 12 eye landmarks and lies inside the inner rim of the classic
# glasses (tests/face/test_mask.py), so the edit draws the frames and the original shows
# through them (docs/edit.md). Sunglasses keep nothing: their lenses cover the eyes.
LENSES = (0.33, 0.17)
ATTRIBUTE_REGIONS: dict[str, AttributeRegion] = {
    "Eyeglasses": AttributeRegion(EYES, (0.75, 0.4), LENSES),
    "Sunglasses": AttributeRegion(EYES, (0.75, 0.4)),
    "Smiling": AttributeRegion(MOUTH, SMILE_PAD),
}
# Soft edge of an edit region and of its kept lenses: Gaussian sigma as a share of the
# crop side (1 px at 64 px, 4 px at 256 px), so a confined edit has no seam.
REGION_FEATHER = 1 / 64


def attribute_region(name: str, crop_landmarks: torch.Tensor, size: int) -> torch.Tensor | None:
    """The box attribute ``name``'s edit may change (its kept lenses not taken out:
    ``edit_region`` does that): (N, 68, 2) crop px of a ``size`` crop -> (N, size, size)
    bool; None for an attribute without a known region."""
    region = ATTRIBUTE_REGIONS.get(name)
    return None if region is None else region.box(crop_landmarks, size)


def edit_region(names: list[str], crop_landmarks: torch.Tensor, size: int) -> torch.Tensor | None:
    """The soft region an edit of ``names`` is confined to (``edit --region auto``): the
    union of their boxes times one minus their kept lenses, each feathered
    -> (N, 1, size, size) float in [0, 1]; None (the whole crop) when any of them has no
    known region."""
    regions = [ATTRIBUTE_REGIONS.get(n) for n in names]
    if not regions or any(r is None for r in regions):
        return None
    sigma = REGION_FEATHER * size
    hard = torch.stack([r.box(crop_landmarks, size) for r in regions]).any(0)[:, None].float()
    soft = _blur(hard, sigma)
    kept = [k for k in (r.kept(crop_landmarks, size) for r in regions) if k is not None]
    if kept:
        soft = soft * (1 - _blur(torch.stack(kept).any(0)[:, None].float(), sigma))
    return soft


def describe_edit_region(names: list[str]) -> dict:
    """What ``edit_region`` of ``names`` is made from, for a job's edit record: each
    region and the feather (a share of the crop side)."""
    return {"areas": {n: ATTRIBUTE_REGIONS[n].describe() for n in names}, "feather": REGION_FEATHER}


def _blur(masks: torch.Tensor, sigma: float) -> torch.Tensor:
    import kornia

    kernel = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(masks, (kernel, kernel), (sigma, sigma), border_type="replicate")
