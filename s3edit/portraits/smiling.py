"""Smiling edit pairs from real photos: the same person neutral and smiling.

The London set photographs every sitter twice, neutral and smiling, in the same studio
light. The two photos are not the same frame, though: the head moves a little between
them, and the aligned crops (whose quad depends on the mouth) differ in hair, ears and
background as much as in the smile. A pair that differs everywhere would teach the
decoder that Smiling moves the hair. So each pair is made to differ only where a smile
does:

1. **register**: the smiling crop is warped onto the neutral one by the similarity
   transform that best maps its brows, nose bridge and eyes (``STABLE_POINTS``, which a
   smile hardly moves) onto the neutral crop's (least squares, ``cv2.estimateAffinePartial2D``
   with LMedS against a stray landmark);
2. **composite**: inside the Smiling region (``s3edit.face.mask.ATTRIBUTE_REGIONS``: the
   mouth's box widened to the cheeks and chin) of both mouths, feathered, the warped
   smiling crop; outside it, the neutral crop, pixel for pixel.

The composite is the neutral face with the sitter's own smile: the pair (neutral,
composite) is what ``s3edit tune --pairs`` teaches the Smiling edit from, in both
directions (adding a smile; removing it). Its landmarks are the neutral crop's with the
mouth's 20 replaced by the warped smiling ones.

**The classic smile** (``draw_smile``): every sitter's smile is different (teeth or
not, corners lifted one pixel or three), and one edit direction can only learn what the
pairs share. As the classic glasses give the decoder one drawing to learn, the classic
smile is one smile moved onto every face from its landmarks, in the face's own frame
(``glasses.face_frame``: units of the eye distance d): the mouth corners go out by
``widen`` and up by ``lift``, the upper lip rises by ``rise`` and the lower lip drops by
``drop`` (outer) and ``part`` (inner), each tapering from the middle of the mouth to its
corners; the crop is warped so that its mouth follows (a thin-plate spline through the
moved mouth and the fixed jaw, nose and eyes, ``scipy.interpolate.RBFInterpolator``),
the warp kept to the Smiling region as the composite is, and the parted lips show
teeth. ``CLASSIC_SMILE``'s sizes are the London pairs' upper quartiles (a clear smile,
not the average one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.interpolate import RBFInterpolator

from s3edit.errors import InputError
from s3edit.face.landmarks import EYES, JAW, NOSE
from s3edit.face.mask import ATTRIBUTE_REGIONS, MOUTH, REGION_FEATHER
from s3edit.portraits.glasses import SHIFT, face_frame

SMILING_SOURCE = "london"  # the collection photographed neutral and smiling
STABLE_POINTS = np.r_[17:31, 36:48]  # brows, nose bridge, eyes: what a smile hardly moves
COMPOSITE_FEATHER = 2 * REGION_FEATHER  # soft edge of the pasted smile, share of the crop side


def smiling_pairs(items: list[dict], source: str = SMILING_SOURCE) -> np.ndarray:
    """(M, 2) int64 rows (neutral, smiling) of the people of ``source`` photographed
    both ways (csv columns ``person`` and ``smiling`` = no/yes), sorted by person."""
    neutral, smiling = {}, {}
    for i, item in enumerate(items):
        if item.get("source") != source or not item.get("person"):
            continue
        side = {"no": neutral, "yes": smiling}.get(str(item.get("smiling", "")).lower())
        if side is not None:
            side.setdefault(item["person"], i)
    people = sorted(set(neutral) & set(smiling))
    if not people:
        raise InputError(f"no person of {source!r} is photographed both neutral and smiling "
                         "(faces.csv's person and smiling columns).")
    return np.array([[neutral[p], smiling[p]] for p in people], np.int64).reshape(-1, 2)


def register(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """(2, 3) similarity transform taking ``points_from``' stable landmarks (68, 2) onto
    ``points_to``'s."""
    matrix, _ = cv2.estimateAffinePartial2D(points_from[STABLE_POINTS].astype(np.float32),
                                            points_to[STABLE_POINTS].astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        raise InputError("the smiling photo's landmarks could not be registered to the neutral one's.")
    return matrix


def composite_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(K, 68, 2) landmarks of one face (its mouths) -> (size, size) float32 in [0, 1]:
    the union of their Smiling regions, feathered."""
    boxes = ATTRIBUTE_REGIONS["Smiling"].box(torch.from_numpy(np.asarray(landmarks, np.float32)), size)
    hard = boxes.any(0).numpy().astype(np.float32)
    sigma = COMPOSITE_FEATHER * size
    kernel = 2 * math.ceil(3 * sigma) + 1
    return cv2.GaussianBlur(hard, (kernel, kernel), sigma, borderType=cv2.BORDER_REPLICATE)


def smile_composite(neutral: np.ndarray, neutral_lnd: np.ndarray, smiling: np.ndarray,
                    smiling_lnd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pair's composite (module docstring): crops (S, S, 3) uint8 and their (68, 2)
    crop landmarks -> (the neutral crop with the registered smile inside the Smiling
    region, its landmarks)."""
    size = neutral.shape[0]
    matrix = register(smiling_lnd, neutral_lnd)
    warped = cv2.warpAffine(smiling, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    warped_lnd = smiling_lnd @ matrix[:, :2].T + matrix[:, 2]
    mask = composite_mask(np.stack([neutral_lnd, warped_lnd]), size)[..., None]
    out = neutral.astype(np.float32) * (1 - mask) + warped.astype(np.float32) * mask
    landmarks = neutral_lnd.copy()
    landmarks[MOUTH[0]:MOUTH[1]] = warped_lnd[MOUTH[0]:MOUTH[1]]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), landmarks.astype(np.float32)


def smile_composites(crops: np.ndarray, landmarks: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The composites of ``pairs`` (M, 2) rows (neutral, smiling) of ``crops`` (N, S, S, 3)
    and ``landmarks`` (N, 68, 2) -> crops (M, S, S, 3) uint8, landmarks (M, 68, 2)."""
    made = [smile_composite(crops[n], landmarks[n], crops[s], landmarks[s]) for n, s in pairs]
    if not made:
        return np.zeros((0, *crops.shape[1:]), np.uint8), np.zeros((0, 68, 2), np.float32)
    return np.stack([c for c, _ in made]), np.stack([lm for _, lm in made])


# The mouth's 20 points by role (68-point scheme): corners, the upper and lower lips'
# outer edges and the inner lips' edges (the inner corners 60 and 64 move as corners
# do, by their place along the mouth).
CORNERS = [48, 54]
UPPER_OUTER, LOWER_OUTER = list(range(49, 54)), list(range(55, 60))
UPPER_INNER, LOWER_INNER = [61, 62, 63], [65, 66, 67]
INNER_LIPS = list(range(60, 68))  # the opening's outline, in order
FIXED_POINTS = np.r_[JAW.start:JAW.stop, NOSE.start:NOSE.stop, EYES.start:EYES.stop]  # what the warp keeps still


@dataclass(frozen=True)
class SmileStyle:
    """One smile, as landmark moves in units of the eye distance d (``face_frame``):
    ``widen``: each corner outwards; ``lift``: each corner up; ``rise``: the upper lip up
    (outer and inner edge, most in the middle); ``drop`` / ``part``: the lower lip's
    outer / inner edge down (most in the middle), so the lips part by about ``rise +
    part``; ``teeth``: RGB seen between the parted lips, at ``teeth_alpha``; ``line``:
    RGB of the dark edge where lips meet teeth, ``line_width`` in d."""

    widen: float = 0.09
    lift: float = 0.11
    rise: float = 0.04
    drop: float = 0.06
    part: float = 0.11
    teeth: tuple[int, int, int] = (226, 218, 204)
    teeth_alpha: float = 0.85
    line: tuple[int, int, int] = (70, 30, 30)
    line_width: float = 0.03


# The London pairs' upper quartiles in units of d (102 sitters, the composites' mouths
# against the neutral ones; benchmarks/pair_change.py prints them): corners 0.088 out
# and 0.113 up, the lips' inner opening 0.015 -> 0.153. Ivory teeth, a dark red lip line.
CLASSIC_SMILE = SmileStyle()
SMILE_STYLES = {"own": None, "classic": CLASSIC_SMILE}  # smiling_job.py --style: None = each sitter's own smile
CLASSIC_SMILE_SOURCES = ("london", "canada", "pixabay")  # the collections the classic smile is drawn on


def classic_smile_rows(items: list[dict], sources=CLASSIC_SMILE_SOURCES) -> np.ndarray:
    """(K,) indices of the faces of ``sources`` that get a classic-smile twin: all but
    those photographed smiling (csv column ``smiling`` = yes)."""
    return np.array([i for i, item in enumerate(items) if item.get("source") in sources
                     and str(item.get("smiling", "")).lower() != "yes"], np.int64)


def smile_moves(landmarks: np.ndarray, style: SmileStyle) -> np.ndarray:
    """(68, 2) landmarks in pixels -> (68, 2) the same with the mouth moved into
    ``style``'s smile (``SmileStyle``); the other 48 points unchanged."""
    frame = face_frame(landmarks)
    uv = frame.to_face(landmarks)
    mouth = uv[MOUTH[0]:MOUTH[1]]
    centre = (uv[CORNERS[0]] + uv[CORNERS[1]]) / 2
    half = max((uv[CORNERS[1], 0] - uv[CORNERS[0], 0]) / 2, 1e-3)
    s = np.clip((mouth[:, 0] - centre[0]) / half, -1.0, 1.0)  # -1 at the image-left corner, +1 at the right
    middle = 1.0 - s ** 2  # 1 in the middle of the mouth, 0 at the corners
    move = np.zeros_like(mouth)
    move[:, 0] = style.widen * s
    move[:, 1] = -style.lift * s ** 2
    rows = np.arange(*MOUTH)
    for points, dv in ((UPPER_OUTER + UPPER_INNER, -style.rise), (LOWER_OUTER, style.drop), (LOWER_INNER, style.part)):
        sel = np.isin(rows, points)
        move[sel, 1] += dv * middle[sel]
    out = uv.copy()
    out[MOUTH[0]:MOUTH[1]] = mouth + move
    return frame.to_image(out).astype(np.float32)


def warp_to(image: np.ndarray, landmarks: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """``image`` (S, S, 3) warped so that its ``landmarks`` (68, 2) land on ``moved``:
    a thin-plate spline through the 20 mouth points (to their moved places) and the jaw,
    nose and eyes and the crop's corners (kept still), sampled backwards -> (S, S, 3)."""
    size = image.shape[0]
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    keep = np.concatenate([landmarks[FIXED_POINTS], corners])
    targets = np.concatenate([moved[MOUTH[0]:MOUTH[1]], keep])  # where points go
    sources = np.concatenate([landmarks[MOUTH[0]:MOUTH[1]], keep])  # where they come from
    # Coincident nodes (dlib puts two landmarks on one pixel on some faces) make the spline's
    # system singular: one node each, with the mean of their displacements.
    nodes, which = np.unique(targets, axis=0, return_inverse=True)
    shifts = np.zeros_like(nodes)
    np.add.at(shifts, which.ravel(), sources - targets)
    shifts /= np.bincount(which.ravel())[:, None]
    back = RBFInterpolator(nodes, shifts, kernel="thin_plate_spline")
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    where = (grid + back(grid)).reshape(size, size, 2).astype(np.float32)
    return cv2.remap(image, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def draw_smile(crop: np.ndarray, landmarks: np.ndarray, style: SmileStyle = CLASSIC_SMILE
               ) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` (S, S, 3) uint8 and its (68, 2) landmarks -> (the same face smiling in
    ``style``, its landmarks): the warped mouth inside the feathered Smiling region of
    both mouths, the crop unchanged outside it, teeth between the parted lips."""
    size = crop.shape[0]
    landmarks = np.asarray(landmarks, np.float64)
    moved = smile_moves(landmarks, style)
    warped = warp_to(crop, landmarks, moved).astype(np.float32)
    d = face_frame(landmarks).d
    opening = np.round(moved[INNER_LIPS] * (1 << SHIFT)).astype(np.int32)
    teeth = np.zeros((size, size), np.uint8)
    cv2.fillPoly(teeth, [opening], 255, cv2.LINE_AA, SHIFT)
    line = np.zeros((size, size), np.uint8)
    cv2.polylines(line, [opening], True, 255, max(1, round(style.line_width * d)), cv2.LINE_AA, SHIFT)
    a_teeth = (teeth.astype(np.float32) / 255 * style.teeth_alpha)[..., None]
    warped = warped * (1 - a_teeth) + np.float32(style.teeth) * a_teeth
    a_line = (line.astype(np.float32) / 255)[..., None]
    warped = warped * (1 - a_line) + np.float32(style.line) * a_line
    mask = composite_mask(np.stack([landmarks, moved]), size)[..., None]
    out = crop.astype(np.float32) * (1 - mask) + warped * mask
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), moved


def classic_smiles(crops: np.ndarray, landmarks: np.ndarray, style: SmileStyle = CLASSIC_SMILE
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``draw_smile`` on every crop (N, S, S, 3) uint8 with its (N, 68, 2) landmarks ->
    crops (N, S, S, 3) uint8, landmarks (N, 68, 2) float32."""
    made = [draw_smile(c, lm, style) for c, lm in zip(crops, landmarks)]
    if not made:
        return np.zeros_like(crops), np.zeros((0, 68, 2), np.float32)
    return np.stack([c for c, _ in made]), np.stack([lm for _, lm in made]).astype(np.float32)
