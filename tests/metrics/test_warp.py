"""Temporal warp error on synthetic videos with known motion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from s3edit.metrics.warp import Warper, WarpErrorMeter, face_region, nanmean

H, W = 96, 128


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture (h, w, 3) uint8: something optical flow can follow."""
    noise = np.random.default_rng(seed).uniform(0, 255, size=(h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return smooth.astype(np.uint8)


def translating(n: int, step=(2, 1)) -> list[np.ndarray]:
    """Windows of a larger texture moving by ``step`` (dx, dy) pixels per frame."""
    big = texture(H + 40, W + 40)
    return [big[20 + i * step[1]: 20 + i * step[1] + H, 20 + i * step[0]: 20 + i * step[0] + W]
            for i in range(n)]


def run(src, edit, landmarks=None):
    meter = WarpErrorMeter()
    steps = [meter.update(s, e, landmarks) for s, e in zip(src, edit)]
    assert steps[0] is None
    return steps[1:]


def test_identical_static_frames_have_zero_error():
    frame = texture(H, W)
    steps = run([frame] * 4, [frame] * 4)
    assert all(s.source == 0.0 and s.edited == 0.0 for s in steps)


def test_flow_recovers_a_pure_translation():
    src = translating(5)
    steps = run(src, src)
    unwarped = np.abs(src[1].astype(float) - src[0].astype(float)).mean()
    assert unwarped > 5  # the frames really differ
    for s in steps:
        assert s.source < 0.05 * unwarped
        assert s.edited == pytest.approx(s.source)


def test_flicker_in_the_edit_is_measured_against_source_motion():
    src = translating(5)
    edit = [np.clip(f.astype(int) + (12 if i % 2 else -12), 0, 255).astype(np.uint8)
            for i, f in enumerate(src)]
    steps = run(src, edit)
    for s in steps:
        assert s.edited > s.source + 15  # a 24-level flicker shows


def test_face_region_restricts_the_average():
    src = translating(3)
    edit = [f.copy() for f in src]
    edit[2][:, : W // 2] = 0  # damage the left half of the last frame only
    box = np.array([[W * 0.6, H * 0.2], [W * 0.9, H * 0.2], [W * 0.9, H * 0.8], [W * 0.6, H * 0.8]])
    lm = np.concatenate([box, np.repeat(box[:1], 64, axis=0)])  # 68 points, hull = box
    steps = run(src, edit, lm)
    assert steps[1].edited > 10
    assert steps[1].edited_face == pytest.approx(steps[1].source_face, abs=0.5)
    region = face_region(lm, (H, W))
    assert region[H // 2, int(W * 0.75)] and not region[H // 2, W // 4]


def test_samples_outside_the_frame_are_not_counted():
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0] = 10.0  # everything comes from outside the frame
    warper = Warper.from_flow(flow)
    assert not warper.inside.any()
    assert np.isnan(warper.error(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)))
    assert np.isnan(nanmean([np.nan])) and nanmean([1.0, np.nan, 3.0]) == 2.0


def test_size_mismatch_is_rejected():
    with pytest.raises(ValueError, match="differ in size"):
        WarpErrorMeter().update(texture(H, W), texture(H, W + 2))
