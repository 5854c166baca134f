"""Picking and following one face; outliers; gap filling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from s3edit.errors import NoFaceError
from s3edit.face.align import quad_params
from s3edit.face.detect import Face, make_detector
from s3edit.face.track import (
    Detections,
    fill_gaps,
    follow,
    max_gap_frames,
    pick_face,
    reject_outliers,
    track_face,
)

FRAME = (640, 480)  # width, height


def template() -> np.ndarray:
    """A plausible (68, 2) face shape in a unit box (the astronaut's, normalised)."""
    face = make_detector("dlib").detect(data.astronaut())[0]
    x0, y0, x1, y1 = face.box
    return (face.landmarks - (x0, y0)) / (x1 - x0)


@pytest.fixture(scope="module")
def unit_face() -> np.ndarray:
    return template()


def fake_face(unit: np.ndarray, x: float, y: float, side: float, score: float = 1.5) -> Face:
    box = np.array([x, y, x + side, y + side], np.float32)
    return Face(box, (unit * side + (x, y)).astype(np.float32), score)


def test_picks_the_prominent_face_and_keeps_it(unit_face):
    # A: large, central, moving right 6 px/frame. B: small, static, left. From frame 5 a
    # larger face C appears on the right: the track must not jump to it (no re-pick).
    frames = []
    for i in range(12):
        faces = [fake_face(unit_face, 60, 200, 60), fake_face(unit_face, 250 + 6 * i, 150, 120)]
        if i >= 5:
            faces.append(fake_face(unit_face, 480, 100, 150))
        frames.append(faces)
    dets = Detections.from_faces(frames)
    start = pick_face(dets, FRAME)
    assert dets.frame[start] == 0 and dets.boxes[start][0] == 250
    chosen = follow(dets, start)
    assert (chosen >= 0).all()
    np.testing.assert_allclose(dets.boxes[chosen][:, 0], 250 + 6 * np.arange(12))


def test_face_option_counts_left_to_right(unit_face):
    frames = [[fake_face(unit_face, 400, 150, 120), fake_face(unit_face, 60, 200, 60)]] * 3
    dets = Detections.from_faces(frames)
    assert dets.boxes[pick_face(dets, FRAME, face=1)][0] == 60
    assert dets.boxes[pick_face(dets, FRAME, face=2)][0] == 400
    with pytest.raises(NoFaceError, match="--face 3 asks for face number 3, but 2 face"):
        pick_face(dets, FRAME, face=3)


def test_no_face_anywhere():
    with pytest.raises(NoFaceError, match="no face was found"):
        pick_face(Detections.from_faces([[], [], []]), FRAME)


def test_fleeting_false_positive_loses_to_persistent_face(unit_face):
    # Frame 0 has only a spurious bigger box; the real face is present from frame 1 on.
    frames = [[fake_face(unit_face, 300, 100, 130, score=0.8)]]
    frames += [[fake_face(unit_face, 100, 150, 100)] for _ in range(8)]
    dets = Detections.from_faces(frames)
    start = pick_face(dets, FRAME)
    assert dets.boxes[start][0] == 100


def test_weak_detections_are_not_counted_as_faces(unit_face):
    frames = [[fake_face(unit_face, 50, 300, 90, score=0.1), fake_face(unit_face, 300, 100, 80)]] * 4
    dets = Detections.from_faces(frames)
    assert dets.boxes[pick_face(dets, FRAME, face=1)][0] == 300  # the weak one is skipped
    with pytest.raises(NoFaceError, match="but 1 face"):
        pick_face(dets, FRAME, face=2)
    weak_only = Detections.from_faces([[fake_face(unit_face, 50, 300, 90, score=0.1)]] * 3)
    assert pick_face(weak_only, FRAME) == 0  # nothing surer: still tracked


def test_gap_fill_short_and_long():
    n = 30
    lm = np.zeros((n, 68, 2), np.float32)
    lm[:, :, 0] = np.arange(n)[:, None] * 2.0  # moves 2 px/frame
    detected = np.ones(n, bool)
    detected[[0, 1]] = False  # leading: not filled
    detected[5:8] = False  # short (3 <= 4): filled by interpolation
    detected[12:20] = False  # long (8 > 4): left invalid
    detected[-1] = False  # trailing: not filled
    filled, valid, gaps, frames, long_gaps = fill_gaps(lm, detected, max_gap=4)
    np.testing.assert_allclose(filled[5:8, :, 0], lm[5:8, :, 0])  # linear motion restored
    assert valid[5:8].all() and not valid[12:20].any()
    assert not valid[[0, 1, -1]].any() and np.isnan(filled[12:20]).all()
    assert (gaps, frames, long_gaps) == (1, 3, 3)


def test_outlier_becomes_a_gap(unit_face):
    frames = [[fake_face(unit_face, 200 + i, 150, 120)] for i in range(15)]
    spike = fake_face(unit_face, 200 + 7, 150, 120)
    spike.landmarks = spike.landmarks + (70, -40)  # landmarks dragged away (hand)
    frames[7] = [spike]
    dets = Detections.from_faces(frames)
    chosen = follow(dets, pick_face(dets, FRAME))
    raw = dets.landmarks[chosen]
    flagged = reject_outliers(raw, chosen >= 0)
    assert flagged.tolist() == [i == 7 for i in range(15)]
    track = track_face(dets, FRAME, max_gap=3)
    assert track.outliers == 1 and track.valid.all() and not track.detected[7]
    c_filled = quad_params(track.landmarks[7])[0]
    c_neighbours = (quad_params(track.landmarks[6])[0] + quad_params(track.landmarks[8])[0]) / 2
    np.testing.assert_allclose(c_filled, c_neighbours, atol=1e-3)


def test_steady_head_turn_is_not_an_outlier(unit_face):
    # The median of a steadily changing sequence is its middle value: no false alarms.
    lm = []
    for i in range(20):
        a = np.radians(2.0 * i)  # 2 degrees per frame, 40 in all
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        lm.append((unit_face * 120 - 60) @ rot.T + (300 + 4 * i, 200))
    assert not reject_outliers(np.array(lm), np.ones(20, bool)).any()


def test_max_gap_default():
    assert max_gap_frames(25.0) == 10 and max_gap_frames(50.0) == 20 and max_gap_frames(1.0) == 1


def two_face_frame(shift: int) -> np.ndarray:
    """A 640x360 frame with the astronaut's face twice: full size on the left at
    x = 20 + shift, and 0.75x on the right (static)."""
    face = data.astronaut()[20:260, 140:330]  # 240 x 190 around the face
    small = cv2.resize(face, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.full((360, 640, 3), 120, np.uint8)
    canvas[40:280, 20 + shift:210 + shift] = face
    canvas[80:80 + small.shape[0], 420:420 + small.shape[1]] = small
    return canvas


def test_tracks_astronaut_among_two_faces():
    detector = make_detector("dlib")
    frames = [detector.detect(two_face_frame(8 * i)) for i in range(5)]
    assert all(len(f) == 2 for f in frames)
    dets = Detections.from_faces(frames)
    track = track_face(dets, (640, 360))
    assert track.valid.all()
    centres = np.array([quad_params(lm)[0] for lm in track.landmarks])
    np.testing.assert_allclose(np.diff(centres[:, 0]), 8, atol=2.5)  # follows the moving one
    right = track_face(dets, (640, 360), face=2)
    assert (quad_params(right.landmarks)[0][:, 0] > 420).all()


def test_group_photo_keeps_the_same_face(shared_clips):
    path = shared_clips / "stills" / "group_five_faces_sunglasses.jpg"
    if not path.exists():
        pytest.skip("group still absent")
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    detector = make_detector("dlib")
    per_frame = []
    for i in range(4):  # the whole group pans 6 px right per frame
        m = np.float32([[1, 0, 6 * i], [0, 1, 0]])
        per_frame.append(detector.detect(cv2.warpAffine(image, m, image.shape[1::-1])))
    dets = Detections.from_faces(per_frame)
    n_faces = len(per_frame[0])
    lefts = sorted(float(f.box[0] + f.box[2]) / 2 for f in per_frame[0])
    for k in (1, n_faces):
        track = track_face(dets, image.shape[1::-1], face=k)
        assert track.detected.all()
        xs = [(dets.boxes[dets.frame == i][:, [0, 2]].mean(1)) for i in range(4)]
        cx = quad_params(track.landmarks)[0][:, 0]
        # The track's face is the k-th from the left in every frame.
        for i in range(4):
            nearest = np.argsort(np.abs(np.sort(xs[i]) - cx[i]))[0]
            assert nearest == k - 1
        assert abs(cx[0] - lefts[k - 1]) < 40
