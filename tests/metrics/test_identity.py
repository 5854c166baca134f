"""Identity / attribute metrics on constructed embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from s3edit.metrics import identity as m


def unit_angles(angles, dim: int = 6) -> np.ndarray:
    """Unit vectors at ``angles`` (radians) in the first two coordinates: (N, dim)."""
    e = np.zeros((len(angles), dim))
    e[:, 0] = np.cos(angles)
    e[:, 1] = np.sin(angles)
    return e


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)) + 3.0  # one "person": a tight cone
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_embeddings_score_exactly_one():
    e = random_unit(20, 128)
    assert m.id_preserve(e, e) == pytest.approx(1.0, abs=1e-12)
    assert m.tl_id(e, e) == 1.0
    assert m.tg_id(e, e) == 1.0


def test_rotation_of_all_frames_keeps_consistency_and_costs_preserve():
    src = unit_angles([0.0, 0.3, 0.5, 0.9])
    phi = 0.25
    edit = unit_angles(np.array([0.0, 0.3, 0.5, 0.9]) + phi)
    assert m.id_preserve(src, edit) == pytest.approx(np.cos(phi), abs=1e-12)
    assert m.tl_id(src, edit) == pytest.approx(1.0, abs=1e-12)
    assert m.tg_id(src, edit) == pytest.approx(1.0, abs=1e-12)


def test_hand_values_and_ratios_above_one():
    src = unit_angles([0.0, 0.2, 0.4])
    edit = unit_angles([0.0, 0.1, 0.2])  # the edit moves half as much: more consistent
    c1, c2, c4 = np.cos(0.1), np.cos(0.2), np.cos(0.4)
    assert m.tl_id(src, edit) == pytest.approx(c1 / c2, abs=1e-12)
    assert m.tg_id(src, edit) == pytest.approx((4 * c1 / c2 + 2 * c2 / c4) / 6, abs=1e-12)
    assert m.tl_id(src, edit) > 1 and m.tg_id(src, edit) > 1
    assert m.id_preserve(src, edit) == pytest.approx((1 + c1 + c2) / 3, abs=1e-12)


def test_invalid_frames_are_ignored():
    src = unit_angles([0.0, 0.2, 0.4, 0.6])
    edit = unit_angles([0.0, 0.1, 0.2, 0.3])
    garbage = src.copy(), edit.copy()
    garbage[0][2] = -garbage[0][2]  # frame 2 has no face: whatever its rows hold
    garbage[1][2] = 0.0
    valid = np.array([True, True, False, True])
    c1, c2 = np.cos(0.1), np.cos(0.2)
    # adjacent valid pairs: only (0, 1); (2, 3) and (1, 2) touch the invalid frame
    assert m.tl_id(*garbage, valid) == pytest.approx(c1 / c2, abs=1e-12)
    assert m.tg_id(*garbage, valid) == pytest.approx(
        m.tg_id(src[[0, 1, 3]], edit[[0, 1, 3]]), abs=1e-12
    )
    assert m.id_preserve(*garbage, valid) == pytest.approx(
        (1 + np.cos(0.1) + np.cos(0.3)) / 3, abs=1e-12
    )
    series = m.identity_series(*garbage, valid)
    assert np.isnan(series.to_source[2]) and np.isnan(series.adjacent_src[0])
    assert np.isnan(series.adjacent_edit[2]) and np.isnan(series.adjacent_edit[3])
    assert series.adjacent_edit[1] == pytest.approx(c1)
    assert series.adjacent_src[1] == pytest.approx(c2)


def test_no_faces_gives_nan_not_a_crash():
    e = random_unit(3, 8)
    none = np.zeros(3, dtype=bool)
    assert np.isnan(m.id_preserve(e, e, none))
    assert np.isnan(m.tl_id(e, e, none))
    assert np.isnan(m.tg_id(e, e, np.array([True, False, False])))


def test_tg_id_blocks_match_the_full_matrix(monkeypatch):
    src, edit = random_unit(37, 16, seed=1), random_unit(37, 16, seed=2)
    s_src, s_edit = m.similarity_matrix(src), m.similarity_matrix(edit)
    off = ~np.eye(37, dtype=bool)
    expected = (s_edit / s_src)[off].mean()
    monkeypatch.setattr(m, "TG_BLOCK_ROWS", 5)
    assert m.tg_id(src, edit) == pytest.approx(expected, rel=1e-12)
    adjacent = (np.diag(s_edit, 1) / np.diag(s_src, 1)).mean()
    assert m.tl_id(src, edit) == pytest.approx(adjacent, rel=1e-12)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="embeddings"):
        m.tl_id(random_unit(3, 8), random_unit(4, 8))


def test_tacr_and_napr_on_known_predictions():
    # 4 frames, 3 attributes (logits); target 1, adding it (+1)
    before = np.array([[2.0, -1.0, -3.0], [2.0, -1.0, 1.0], [-2.0, 3.0, 1.0], [2.0, -2.0, 1.0]])
    after = np.array([[2.0, 1.0, -3.0], [-2.0, 2.0, 1.0], [-2.0, 3.0, 1.0], [2.0, -1.0, 1.0]])
    # moved to present: frames 0, 1; frame 2 already had it; frame 3 did not move
    assert m.tacr(before, after, target=1, direction=+1) == pytest.approx(0.5)
    # non-targets unchanged: frames 0, 2, 3 (frame 1 lost attribute 0)
    assert m.napr(before, after, target=1) == pytest.approx(0.75)
    # attribute by attribute: 0 flipped in frame 1, 1 in frames 0 and 1, 2 never
    np.testing.assert_allclose(m.label_flips(before, after), [0.25, 0.5, 0.0])
    np.testing.assert_allclose(m.label_flips(before, after, np.array([False, False, True, True])), [0, 0, 0])
    assert np.isnan(m.label_flips(before, after, np.zeros(4, bool))).all()
    # removing attribute 1: only frame 2 started with it and it stayed
    assert m.tacr(before, after, target=1, direction=-1) == 0.0
    valid = np.array([True, False, True, True])
    assert m.tacr(before, after, 1, +1, valid) == pytest.approx(1 / 3)
    assert m.napr(before, after, 1, valid) == 1.0
    probs = 1 / (1 + np.exp(-before)), 1 / (1 + np.exp(-after))
    assert m.tacr(*probs, 1, +1, threshold=0.5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="direction"):
        m.tacr(before, after, 1, 0)
    with pytest.raises(ValueError, match="target index"):
        m.napr(before, after, 3)
