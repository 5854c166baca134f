"""Face detection + 68-point landmarks behind one small interface.

``make_detector(name)`` returns a ``LandmarkDetector``; ``detector.detect(image)``
takes one ``(H, W, 3)`` uint8 RGB frame and returns every face found as a ``Face``
(box, 68 landmarks in frame pixels, score). Back-ends:

- ``dlib`` (default, offline): dlib's HOG frontal-face detector and its 68-point shape
  predictor (``shape_predictor_68_face_landmarks.dat`` from face_recognition_models,
  trained on iBUG 300-W: licence restricts commercial use). The default of DVA and STIT.
- ``fan``: the ``face-alignment`` package (S3FD detector + FAN landmarks), where it is
  installed and its weights can be downloaded (it fetches them on first use).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from s3edit.errors import WeightsError

# HOG runs on a copy whose longest side is at most this (faces in talking-head footage
# are large; HOG cost grows with the pixel count). Landmarks use the full frame.
HOG_MAX_SIDE = 640
# HOG finds faces of >= ~80 px at its native scale. When it finds none on the downscaled
# copy it retries on the full frame; on a frame already at full size it retries once on
# a 2x upsampled pyramid (faces down to ~40 px), as dlib's own examples do.
HOG_RETRY_UPSAMPLE = 1
DETECTORS = ("dlib", "fan")


@dataclass
class Face:
    """One detected face. ``box``: (4,) float32 x0, y0, x1, y1 in frame pixels;
    ``landmarks``: (68, 2) float32 (x, y) in frame pixels; ``score``: detector
    confidence (dlib: HOG SVM margin, ~> 0.5 for clear faces; fan: S3FD probability)."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float


class LandmarkDetector:
    """The contract every back-end implements."""

    name = "base"

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in ``image`` ((H, W, 3) uint8 RGB), in the detector's order."""
        raise NotImplementedError


class DlibDetector(LandmarkDetector):
    """dlib HOG detector on a downscaled grey copy + 68-point predictor at full size."""

    name = "dlib"

    def __init__(self, hog_max_side: int = HOG_MAX_SIDE):
        import dlib
        import face_recognition_models

        self.hog_max_side = hog_max_side
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(
            face_recognition_models.pose_predictor_model_location()
        )
        self._rectangle = dlib.rectangle

    def detect(self, image: np.ndarray) -> list[Face]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.hog_max_side / max(grey.shape))
        small = grey if scale == 1.0 else cv2.resize(
            grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
        )
        rects, scores, _ = self._hog.run(small, 0, 0.0)
        if len(rects) == 0 and scale < 1.0:  # retry finer: the full frame
            scale = 1.0
            rects, scores, _ = self._hog.run(grey, 0, 0.0)
        elif len(rects) == 0:  # already full size: retry on a 2x upsampled pyramid
            rects, scores, _ = self._hog.run(grey, HOG_RETRY_UPSAMPLE, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            # dlib boxes are inclusive integer pixel ranges; x1/y1 here are exclusive.
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1],
                           dtype=np.float64) / scale
            full = self._rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
            shape = self._predictor(grey, full)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
            faces.append(Face(box.astype(np.float32), points, float(score)))
        return faces


class FanDetector(LandmarkDetector):
    """face-alignment's S3FD detector + 2-D FAN landmarks (optional back-end)."""

    name = "fan"

    def __init__(self, device: str | None = None):
        try:
            import face_alignment
        except ImportError as exc:
            raise WeightsError(
                "the 'fan' detector needs the face-alignment package, which is not "
                "installed; run `pip install face-alignment` on a machine with internet "
                "access (it downloads its weights on first use) or use --detector dlib."
            ) from exc
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None)
        if kind is None:  # face-alignment < 1.4 spells it _2D
            kind = face_alignment.LandmarksType._2D
        try:
            self._fa = face_alignment.FaceAlignment(kind, device=device, flip_input=False)
        except Exception as exc:  # download/cache failures come in many types
            raise WeightsError(
                f"face-alignment could not load its weights ({type(exc).__name__}: {exc}); "
                "run once with internet access so it can download them, or use --detector dlib."
            ) from exc

    def detect(self, image: np.ndarray) -> list[Face]:
        landmarks, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True)
        if not landmarks:
            return []
        return [
            Face(np.asarray(b[:4], np.float32), np.asarray(lm[:, :2], np.float32), float(b[4]))
            for lm, b in zip(landmarks, boxes)
        ]


def make_detector(name: str = "dlib") -> LandmarkDetector:
    """A landmark detector by name: ``dlib`` (default) or ``fan``."""
    if name == "dlib":
        return DlibDetector()
    if name == "fan":
        return FanDetector()
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}.")
