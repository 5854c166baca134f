"""FFHQ quad math against hand-computed values, transforms, warps and smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from s3edit.face import align as fa
from s3edit.face.landmarks import LEFT_EYE, MOUTH_LEFT_CORNER, MOUTH_RIGHT_CORNER, RIGHT_EYE


def face_points(eye_r=(40, 50), eye_l=(60, 50), mouth_r=(42, 70), mouth_l=(58, 70)) -> np.ndarray:
    """(68, 2) landmarks with every eye point on its eye centre and the given mouth
    corners; the other points are irrelevant to the quad (set far away on purpose)."""
    lm = np.full((68, 2), 1e4, np.float64)
    lm[RIGHT_EYE] = eye_r
    lm[LEFT_EYE] = eye_l
    lm[MOUTH_RIGHT_CORNER] = mouth_r
    lm[MOUTH_LEFT_CORNER] = mouth_l
    return lm


def test_quad_eye_span_dominates():
    # eye_avg (50, 50), eye_to_eye (20, 0), eye_to_mouth (0, 20):
    # x = (20, 0) - rot90((0, 20)) = (40, 0) -> unit (1, 0) * max(2*20, 1.8*20) = (40, 0)
    # y = (0, 40); c = (50, 50) + 0.1 * (0, 20) = (50, 52)
    quad = fa.quad_from_landmarks(face_points())
    expected = [[10, 12], [10, 92], [90, 92], [90, 12]]  # TL, BL, BR, TR
    np.testing.assert_allclose(quad, expected, atol=1e-5)


def test_quad_mouth_span_dominates():
    # eye_to_mouth (0, 30): half-size = max(40, 54) = 54; c = (50, 53)
    quad = fa.quad_from_landmarks(face_points(mouth_r=(42, 80), mouth_l=(58, 80)))
    expected = [[-4, -1], [-4, 107], [104, 107], [104, -1]]
    np.testing.assert_allclose(quad, expected, atol=1e-5)


def test_quad_rotates_with_the_face():
    lm = face_points()
    angle = np.radians(30)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([50.0, 60.0])
    turned = (lm - centre) @ rot.T + centre
    np.testing.assert_allclose(fa.quad_from_landmarks(turned),
                               (fa.quad_from_landmarks(lm) - centre) @ rot.T + centre, atol=1e-3)


def test_quad_nan_stays_nan_and_batches():
    lm = np.stack([face_points(), np.full((68, 2), np.nan)])
    quads = fa.quad_from_landmarks(lm)
    assert quads.shape == (2, 4, 2)
    assert np.isfinite(quads[0]).all() and np.isnan(quads[1]).all()


def test_transform_maps_quad_to_crop_edges():
    quad = fa.quad_from_landmarks(face_points())
    t = fa.quad_to_transform(quad, 256)
    corners = fa.apply_transform(t, quad)
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]],
                               atol=1e-4)
    assert np.isnan(fa.quad_to_transform(np.full((4, 2), np.nan), 256)).all()


def test_warp_identity_reproduces_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    quad = np.array([[7.5, 3.5], [7.5, 35.5], [39.5, 35.5], [39.5, 3.5]])  # 32 px square
    crop = fa.warp_crop(image, fa.quad_to_transform(quad, 32), 32)
    np.testing.assert_array_equal(crop, image[4:36, 8:40])


def test_warp_shrinks_without_aliasing():
    # A 1-px checkerboard shrunk 4x must come out flat grey (box filter first); plain
    # bicubic sampling would pick single pixels and keep the full black/white contrast.
    yy, xx = np.mgrid[0:512, 0:512]
    image = np.repeat((((xx + yy) % 2) * 255).astype(np.uint8)[..., None], 3, axis=2)
    quad = np.array([[-0.5, -0.5], [-0.5, 511.5], [511.5, 511.5], [511.5, -0.5]])
    crop = fa.warp_crop(image, fa.quad_to_transform(quad, 128), 128)
    assert abs(crop.mean() - 127.5) < 2 and crop.std() < 3


def test_warp_pads_by_reflection():
    # Quad twice the frame, centred: the padding mirrors the frame instead of black.
    image = np.full((50, 50, 3), 200, np.uint8)
    quad = np.array([[-25.5, -25.5], [-25.5, 74.5], [74.5, 74.5], [74.5, -25.5]])
    crop = fa.warp_crop(image, fa.quad_to_transform(quad, 64), 64)
    assert crop.min() == 200 and crop.max() == 200


def test_smoothing_stays_within_runs():
    values = np.array([0, 0, 0, 10, 10, 10, 0, 0, 0], np.float64)
    valid = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1], bool)
    out = fa.smooth_segments(values, valid, sigma=2.0)
    np.testing.assert_array_equal(out[:4], values[:4])  # first run constant, gap untouched
    assert out[4] > out[8]  # the second run is blurred inside itself
    assert fa.valid_runs(valid) == [(0, 3), (4, 9)]


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(1)
    n = 200
    landmarks = np.repeat(face_points()[None], n, axis=0) + rng.normal(0, 1.0, (n, 1, 2))
    valid = np.ones(n, bool)
    raw = fa.quad_from_landmarks(landmarks).mean(axis=1)
    smooth = fa.smooth_quads(landmarks, valid).mean(axis=1)
    step = lambda c: np.linalg.norm(np.diff(c, axis=0), axis=1).mean()  # noqa: E731
    assert step(smooth) < 0.5 * step(raw)


@pytest.mark.parametrize("size", [64, 256])
def test_astronaut_crop_centres_the_face(size):
    from skimage import data

    from s3edit.face.detect import make_detector

    image = data.astronaut()
    face = make_detector("dlib").detect(image)[0]
    t = fa.quad_to_transform(fa.quad_from_landmarks(face.landmarks), size)
    crop_lm = fa.apply_transform(t, face.landmarks)
    eyes = (crop_lm[RIGHT_EYE].mean(0) + crop_lm[LEFT_EYE].mean(0)) / 2
    # FFHQ puts the eye midpoint on the vertical centre line, a bit above the middle.
    assert abs(eyes[0] / size - 0.5) < 0.03
    assert 0.3 < eyes[1] / size < 0.5
    assert fa.warp_crop(image, t, size).shape == (size, size, 3)
