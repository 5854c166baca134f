"""Face detection + 68-point landmarks behind one small interface.

``make_detector(name)`` returns a ``LandmarkDetector``; ``detector.detect(image)``
takes one ``(H, W, 3)`` uint8 RGB frame and returns every face found as a ``Face``
(box, 68 landmarks in frame pixels, score). Back-ends:

- ``dlib`` (default, offline): dlib's HOG frontal-face detector, and on a frame where
  HOG finds no face, dlib's CNN face detector (MMOD, ``mmod_human_face_detector.dat``);
  landmarks from dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat``)
  on whichever box was found. All three model files come with face_recognition_models;
  the predictor was trained on iBUG 300-W, whose licence restricts commercial use. HOG
  alone is the default of DVA and STIT.
- ``hog``: dlib's HOG detector only (no CNN pass: a frame HOG misses has no face).
- ``cnn``: dlib's CNN detector only.
- ``fan``: the ``face-alignment`` package (S3FD detector + FAN landmarks), where it is
  installed and its weights can be downloaded (it fetches them on first use).
"""

from __future__ import annotations

from collections import Counter
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
# The CNN sees the frame resized so that its longest side is this, whatever the frame's
# size, so a CNN pass costs the same on frames of one shape: ~0.6 s of one CPU core for a
# 16:9 frame (384 x 216), ~1.2 s for a square one, against ~20 ms for HOG on a 640 x 360
# frame; hence it runs only on frames HOG misses. It finds faces whose box is >= ~64 px
# there: >= ~1/6 of the frame's longest side.
CNN_SIDE = 384
# CNN boxes sit higher and further left on the face than HOG's, which the 68-point
# predictor was trained on. Each CNN box is moved by this fraction of its side (x, y)
# before the predictor runs: on 55 faces of the shared clips that both detectors found,
# this halved the landmarks' mean difference from those on the HOG box (3.0% -> 1.5% of
# the eye distance; worst face 26% -> 5%).
CNN_BOX_SHIFT = (0.05, 0.09)
# Names make_detector accepts (the CLI's --detector choices), the default first.
DETECTORS = ("dlib", "hog", "cnn", "fan")
# The passes each dlib back-end tries, in order, until one finds a face.
DLIB_PASSES = {"dlib": ("hog", "cnn"), "hog": ("hog",), "cnn": ("cnn",)}


@dataclass
class Face:
    """One detected face. ``box``: (4,) float32 x0, y0, x1, y1 in frame pixels;
    ``landmarks``: (68, 2) float32 (x, y) in frame pixels; ``score``: detector
    confidence (HOG: SVM margin, ~> 0.5 for clear faces; CNN: MMOD confidence, ~1.0-1.1
    for clear faces; fan: S3FD probability)."""

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
    """dlib's detectors tried in order (``passes``: ``hog``, ``cnn``) until one finds a
    face in the frame, then the 68-point predictor on every box of that pass, at full size.

    ``hog``: HOG on a downscaled grey copy, retried finer (module constants) when it
    finds nothing; ``cnn``: the MMOD CNN on an RGB copy resized to ``cnn_side``.
    ``frames_found_by`` counts the frames each pass found a face in (``none``: no pass
    did)."""

    def __init__(self, passes: tuple[str, ...] = DLIB_PASSES["dlib"], hog_max_side: int = HOG_MAX_SIDE,
                 cnn_side: int = CNN_SIDE, name: str = "dlib"):
        import dlib
        import face_recognition_models

        unknown = set(passes) - {"hog", "cnn"}
        if not passes or unknown:
            raise ValueError(f"dlib passes must be 'hog' and/or 'cnn' (got {passes!r}).")
        self.name = name
        self.passes = tuple(passes)
        self.hog_max_side = hog_max_side
        self.cnn_side = cnn_side
        self.frames_found_by: Counter[str] = Counter()
        self._hog = dlib.get_frontal_face_detector() if "hog" in passes else None
        self._cnn = dlib.cnn_face_detection_model_v1(
            face_recognition_models.cnn_face_detector_model_location()
        ) if "cnn" in passes else None
        self._predictor = dlib.shape_predictor(
            face_recognition_models.pose_predictor_model_location()
        )
        self._rectangle = dlib.rectangle

    def detect(self, image: np.ndarray) -> list[Face]:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        found: list[tuple[np.ndarray, float]] = []
        for kind in self.passes:
            found = self._hog_boxes(grey) if kind == "hog" else self._cnn_boxes(image)
            if found:
                self.frames_found_by[kind] += 1
                break
        else:
            self.frames_found_by["none"] += 1
        return [self._face(grey, box, score) for box, score in found]

    def _hog_boxes(self, grey: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """HOG's boxes (x0, y0, x1, y1 in frame pixels) and margins."""
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
        return [(_box(rect) / scale, float(score)) for rect, score in zip(rects, scores)]

    def _cnn_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """The CNN's boxes, moved to where HOG would put them (CNN_BOX_SHIFT), and its
        confidences."""
        scale = self.cnn_side / max(image.shape[:2])
        resized = cv2.resize(image, None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)
        found = []
        for detection in self._cnn(resized, 0):
            box = _box(detection.rect) / scale
            side = box[2] - box[0]
            box += np.tile(np.array(CNN_BOX_SHIFT) * side, 2)
            found.append((box, float(detection.confidence)))
        return found

    def _face(self, grey: np.ndarray, box: np.ndarray, score: float) -> Face:
        """The 68 landmarks in the full-size grey frame on ``box`` (exclusive x1/y1)."""
        full = self._rectangle(*(round(v) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        shape = self._predictor(grey, full)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Face(box.astype(np.float32), points, score)


def _box(rect) -> np.ndarray:
    """A dlib rectangle (inclusive integer pixel ranges) as float64 x0, y0, x1, y1 with
    x1/y1 exclusive."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


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
    """A landmark detector by name (one of ``DETECTORS``): ``dlib`` (default: HOG, then
    the CNN on frames HOG misses), ``hog``, ``cnn`` or ``fan``."""
    if name in DLIB_PASSES:
        return DlibDetector(DLIB_PASSES[name], name=name)
    if name == "fan":
        return FanDetector()
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}.")
