"""Landmark detector back-ends: dlib on real photos, the fan back-end's missing-package
message."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from skimage import data

from s3edit.errors import WeightsError
from s3edit.face.detect import Face, make_detector
from s3edit.face.landmarks import JAW, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE


@pytest.fixture(scope="module")
def dlib_detector():
    return make_detector("dlib")


def check_face_shape(face: Face) -> None:
    lm = face.landmarks
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    eye_r, eye_l = lm[RIGHT_EYE].mean(0), lm[LEFT_EYE].mean(0)
    assert eye_r[0] < eye_l[0]  # subject's right eye on the image left
    assert lm[MOUTH].mean(0)[1] > lm[NOSE].mean(0)[1] > (eye_r[1] + eye_l[1]) / 2
    x0, y0, x1, y1 = face.box
    inner = lm[17:]
    assert (inner[:, 0] > x0 - 10).all() and (inner[:, 0] < x1 + 10).all()
    assert lm[JAW].mean(0)[1] > y0


def test_dlib_astronaut(dlib_detector):
    faces = dlib_detector.detect(data.astronaut())
    assert len(faces) == 1
    check_face_shape(faces[0])
    # The face of the 512 px photo, measured once: box ~ (179, 83)-(267, 171).
    np.testing.assert_allclose(faces[0].box, [179, 83, 267, 171], atol=8)
    assert faces[0].score > 0.5


def test_dlib_downscaled_frame_gives_full_resolution_landmarks(dlib_detector):
    image = data.astronaut()
    big = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_CUBIC)  # HOG runs on 640
    small_face = dlib_detector.detect(image)[0]
    big_face = dlib_detector.detect(big)[0]
    # Same face, coordinates in the big frame: twice the small ones (within a few px).
    eyes = lambda lm: np.concatenate([lm[RIGHT_EYE], lm[LEFT_EYE]]).mean(0)  # noqa: E731
    np.testing.assert_allclose(eyes(big_face.landmarks), 2 * eyes(small_face.landmarks) + 0.5, atol=4)


def test_dlib_no_face(dlib_detector):
    rng = np.random.default_rng(0)
    assert dlib_detector.detect(np.full((240, 320, 3), 90, np.uint8)) == []
    assert dlib_detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []


def test_dlib_group_photo(dlib_detector, shared_clips):
    path = shared_clips / "stills" / "group_five_faces_sunglasses.jpg"
    if not path.exists():
        pytest.skip("group still absent")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    faces = dlib_detector.detect(image)
    assert len(faces) >= 3  # HOG finds 4 of the 5 (the sunglasses face is hard)
    for face in faces:
        check_face_shape(face)


def test_fan_without_package_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # import fails
    with pytest.raises(WeightsError) as info:
        make_detector("fan")
    message = str(info.value)
    assert "face-alignment" in message and "--detector dlib" in message
    assert "pip install face-alignment" in message


def test_unknown_detector():
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("nope")


def fake_face_alignment(fail: bool = False):
    """A stand-in for the face-alignment package (its API: FaceAlignment(kind, device=,
    flip_input=), get_landmarks_from_image(image, return_bboxes=True) ->
    (landmarks, scores, boxes with the score as 5th value))."""
    from types import SimpleNamespace

    class FaceAlignment:
        def __init__(self, kind, device, flip_input):
            if fail:
                raise OSError("could not reach the weights server")

        def get_landmarks_from_image(self, image, return_bboxes=False):
            lm = np.tile(np.arange(68, dtype=np.float32)[:, None], (1, 2))
            return [lm], [np.ones(68)], [np.array([1, 2, 30, 40, 0.99])]

    return SimpleNamespace(LandmarksType=SimpleNamespace(TWO_D=1), FaceAlignment=FaceAlignment)


def test_fan_weights_unavailable_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", fake_face_alignment(fail=True))
    with pytest.raises(WeightsError, match="face-alignment could not load its weights .*"
                                           "run once with internet access"):
        make_detector("fan")


def test_fan_adapter_returns_faces(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", fake_face_alignment())
    faces = make_detector("fan").detect(np.zeros((50, 50, 3), np.uint8))
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].box, [1, 2, 30, 40])
    assert faces[0].landmarks.shape == (68, 2) and faces[0].landmarks.dtype == np.float32
    assert faces[0].score == pytest.approx(0.99)
