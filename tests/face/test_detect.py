"""Landmark detector back-ends: dlib on real photos, its CNN pass on faces HOG misses,
the names that force one back-end, the fan back-end's missing-package message."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from skimage import data

from s3edit.errors import WeightsError
from s3edit.face.detect import DETECTORS, Face, make_detector
from s3edit.face.landmarks import JAW, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE


@pytest.fixture(scope="module")
def dlib_detector():
    return make_detector("dlib")


@pytest.fixture(scope="module")
def hog_detector():
    return make_detector("hog")


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


def test_dlib_no_face():
    detector = make_detector("dlib")
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((240, 320, 3), 90, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []
    assert detector.frames_found_by == {"none": 2}  # both passes ran, neither found one


def sunglasses_portrait() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head and shoulders (300 px square, the face about a third of it)
    with dark lenses over both eyes, and the offset (x, y) of this frame in the photo."""
    frame = data.astronaut()[0:300, 70:370].copy()
    frame[100:125, 115:150] = 15
    frame[100:125, 158:193] = 15
    return frame, np.array([70, 0], np.float32)


def out_of_focus() -> tuple[np.ndarray, np.ndarray]:
    """The whole astronaut photo blurred (Gaussian, sigma 4 px: a face out of focus)."""
    return cv2.GaussianBlur(data.astronaut(), (0, 0), 4), np.zeros(2, np.float32)


@pytest.mark.parametrize("make_frame", [sunglasses_portrait, out_of_focus])
def test_cnn_pass_finds_a_face_hog_misses(make_frame, dlib_detector, hog_detector):
    frame, offset = make_frame()
    assert hog_detector.detect(frame) == []  # HOG, with its finer retries, misses it
    before = dlib_detector.frames_found_by["cnn"]
    faces = dlib_detector.detect(frame)
    assert dlib_detector.frames_found_by["cnn"] == before + 1
    assert len(faces) == 1
    check_face_shape(faces[0])
    # Landmarks land where HOG's put them on the untouched photo: within 15% of the eye
    # distance on average (the predictor runs on the moved CNN box).
    clear = hog_detector.detect(data.astronaut())[0].landmarks
    eye_distance = np.linalg.norm(clear[RIGHT_EYE].mean(0) - clear[LEFT_EYE].mean(0))
    error = np.linalg.norm(faces[0].landmarks + offset - clear, axis=1)
    assert error.mean() < 0.15 * eye_distance
    np.testing.assert_allclose(faces[0].box[[0, 2]] + offset[0], [179, 267], atol=15)


def test_cnn_pass_runs_only_on_frames_hog_misses(monkeypatch):
    detector = make_detector("dlib")

    def refuse(*args):
        raise AssertionError("the CNN must not run where HOG found a face")

    monkeypatch.setattr(detector, "_cnn", refuse)
    faces = detector.detect(data.astronaut())
    hog_faces = make_detector("hog").detect(data.astronaut())
    assert len(faces) == 1 and detector.frames_found_by == {"hog": 1}
    np.testing.assert_array_equal(faces[0].box, hog_faces[0].box)
    np.testing.assert_array_equal(faces[0].landmarks, hog_faces[0].landmarks)


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    w, h = np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])
    inter = max(0.0, float(w)) * max(0.0, float(h))
    return inter / (float(np.prod(a[2:] - a[:2])) + float(np.prod(b[2:] - b[:2])) - inter)


def test_cnn_alone(hog_detector):
    detector = make_detector("cnn")
    assert detector.passes == ("cnn",)
    faces = detector.detect(data.astronaut())
    assert len(faces) == 1 and detector.frames_found_by == {"cnn": 1}
    check_face_shape(faces[0])
    assert faces[0].score > 0.5
    clear = hog_detector.detect(data.astronaut())[0]
    assert overlap(faces[0].box, clear.box) > 0.6  # the moved CNN box sits on HOG's
    assert detector.detect(np.full((240, 320, 3), 90, np.uint8)) == []


def test_hog_alone_has_no_cnn_pass(hog_detector):
    assert hog_detector.passes == ("hog",) and hog_detector._cnn is None
    assert make_detector("dlib").passes == ("hog", "cnn")


@pytest.mark.parametrize("name", ["dlib", "hog", "cnn"])
def test_cli_detector_choice_reaches_the_detector(name, cli, example_clip, tmp_path, monkeypatch):
    import s3edit.pipeline.align as pa

    asked = []

    class Blind:
        def detect(self, image):
            return []

    monkeypatch.setattr(pa, "make_detector", lambda chosen: asked.append(chosen) or Blind())
    result = cli("align", str(example_clip), "-o", str(tmp_path / "job"), "--detector", name)
    assert result.exit_code == 1 and "no face was found" in result.stderr
    assert asked == [name]


def test_cli_lists_every_detector(cli):
    help_text = cli("align", "--help").stdout
    for name in DETECTORS:
        assert name in help_text


def test_dlib_group_photo_face_hog_misses(dlib_detector, hog_detector, shared_clips):
    path = shared_clips / "stills" / "group_five_faces_sunglasses.jpg"
    if not path.exists():
        pytest.skip("group still absent")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    face = np.ascontiguousarray(image[0:240, 150:400])  # the face in sunglasses, alone
    assert hog_detector.detect(face) == []
    faces = dlib_detector.detect(face)
    assert len(faces) == 1
    check_face_shape(faces[0])


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
