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
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from s3edit.errors import InputError
from s3edit.face.mask import ATTRIBUTE_REGIONS, MOUTH, REGION_FEATHER

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
