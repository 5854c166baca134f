"""Synthetic eyeglasses: drawn around the eyes only, in varied, reproducible styles."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from s3edit.portraits.glasses import (
    SHAPES, GlassesStyle, draw_glasses, face_frame, glasses_layers, glasses_twins, random_style,
)
from s3edit.face.landmarks import BROWS, JAW, LEFT_EYE, NOSE_BASE, RIGHT_EYE


@pytest.fixture(scope="module")
def astronaut():
    """(image (512, 512, 3) uint8, landmarks (68, 2)) of skimage's astronaut photo."""
    from s3edit.face.detect import make_detector

    image = data.astronaut()
    faces = make_detector("dlib").detect(image)
    assert len(faces) == 1
    return image, faces[0].landmarks


def eye_region(lm: np.ndarray, d: float) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1: jaw top ends left/right, above the brows, down to the nostrils."""
    x0 = lm[JAW[0], 0] - 0.15 * d
    x1 = lm[JAW[-1], 0] + 0.15 * d
    y0 = lm[BROWS, 1].min() - 0.2 * d
    y1 = lm[NOSE_BASE, 1].max()
    return x0, y0, x1, y1


@pytest.mark.parametrize("shape", SHAPES)
def test_glasses_change_pixels_around_the_eyes_only(astronaut, shape):
    image, lm = astronaut
    style = GlassesStyle(shape=shape, top_bar=shape == "aviator", lens_alpha=0.7, tint=(20, 20, 20))
    out = draw_glasses(image, lm, style)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.any(out != image, axis=-1)
    ys, xs = np.nonzero(changed)
    d = face_frame(lm).d
    x0, y0, x1, y1 = eye_region(lm, d)
    assert changed.sum() > 0.5 * d * d  # two lenses at least
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    # tinted lenses cover both eye centres and darken them
    for eye in (RIGHT_EYE, LEFT_EYE):
        cx, cy = np.round(lm[eye].mean(0)).astype(int)
        assert changed[cy, cx]
        assert out[cy, cx].astype(int).sum() < image[cy, cx].astype(int).sum()
    # the input is untouched and the mouth region too
    assert not changed[int(lm[NOSE_BASE, 1].max()) + 2 :].any()


def test_clear_lenses_keep_the_eyes_visible(astronaut):
    image, lm = astronaut
    out = draw_glasses(image, lm, GlassesStyle(lens_alpha=0.05))
    cx, cy = np.round(lm[RIGHT_EYE].mean(0)).astype(int)
    assert np.abs(out[cy, cx].astype(int) - image[cy, cx].astype(int)).max() <= 15


def test_styles_vary_with_the_seed_and_repeat_with_it(astronaut):
    image, lm = astronaut
    a = random_style(np.random.default_rng(0))
    b = random_style(np.random.default_rng(1))
    assert a != b
    assert random_style(np.random.default_rng(0)) == a
    assert not np.array_equal(draw_glasses(image, lm, a), draw_glasses(image, lm, b))
    shapes = {random_style(np.random.default_rng(s)).shape for s in range(30)}
    assert shapes == set(SHAPES)
    tinted = [random_style(np.random.default_rng(s)).lens_alpha > 0.4 for s in range(200)]
    assert 0.1 < np.mean(tinted) < 0.4


def test_shapes_give_different_lenses(astronaut):
    image, lm = astronaut
    lenses = [glasses_layers(image.shape[:2], lm, GlassesStyle(shape=s))[0] for s in SHAPES]
    for i in range(len(SHAPES)):
        for j in range(i + 1, len(SHAPES)):
            assert np.abs(lenses[i] - lenses[j]).sum() > 50


def test_glasses_follow_a_rotated_face(astronaut):
    """Rotating the landmarks rotates the drawing: the lens mask of a face turned by
    90 degrees is the original mask turned by 90 degrees."""
    image, lm = astronaut
    h, w = image.shape[:2]
    lens, _ = glasses_layers((h, w), lm, GlassesStyle())
    # np.rot90 (counter-clockwise): pixel (x, y) -> (y, w - 1 - x)
    rotated_lm = np.stack([lm[:, 1], w - 1 - lm[:, 0]], axis=1)
    lens_rot, _ = glasses_layers((w, h), rotated_lm, GlassesStyle())
    overlap = (np.rot90(lens) > 0.5) & (lens_rot > 0.5)
    assert overlap.sum() > 0.97 * (lens > 0.5).sum()


def test_twins_are_reproducible(astronaut):
    image, lm = astronaut
    crops = np.stack([image, image])
    lms = np.stack([lm, lm])
    a = glasses_twins(crops, lms, np.array([3, 4]), seed=0)
    b = glasses_twins(crops, lms, np.array([3, 4]), seed=0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # other keys, other styles


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="unknown glasses shape"):
        GlassesStyle(shape="monocle")
