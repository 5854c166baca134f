"""The network's image convention: frames are (N, 3, S, S) float in [-1, 1] at the
model's side S; crops on disk are (N, s, s, 3) uint8 RGB at the align stage's side s.
Crops go into the network resized with cv2's INTER_AREA (as training reads them);
decoded frames come out with INTER_AREA to shrink and INTER_CUBIC to enlarge."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _resize(images: np.ndarray, size: int, interp: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def to_model(images: np.ndarray, size: int) -> torch.Tensor:
    """(B, s, s, 3) uint8 RGB -> (B, 3, size, size) float32 in [-1, 1]."""
    return torch.from_numpy(_resize(images, size, cv2.INTER_AREA)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor, size: int) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, size, size, 3) uint8 RGB."""
    img = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return _resize(img, size, cv2.INTER_AREA if img.shape[1] > size else cv2.INTER_CUBIC)


def landmarks_unit(crop_landmarks: np.ndarray, size: int) -> torch.Tensor:
    """(B, 68, 2) crop px (pixel-centre origin) of a ``size`` crop -> [0, 1] crop
    coordinates, the convention of ``DVA.z_lnd(landmarks=...)`` and of training."""
    return torch.from_numpy((np.asarray(crop_landmarks, np.float32) + 0.5) / size)


def rescale_landmarks(crop_landmarks: np.ndarray, size_from: int, size_to: int) -> np.ndarray:
    """Crop px of a ``size_from`` crop -> crop px of a ``size_to`` crop (pixel-centre
    coordinates scale about the -0.5 px edge)."""
    return (np.asarray(crop_landmarks, np.float32) + 0.5) * (size_to / size_from) - 0.5
