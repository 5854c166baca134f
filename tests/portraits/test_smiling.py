"""Smiling pairs (s3edit.portraits.smiling): from real photos, which rows pair up, the
registration of the smiling photo onto the neutral one, and a composite that differs
from the neutral crop only inside the Smiling region; the classic smile, its landmark
moves in the face's frame, the warp that carries the mouth there, and its job."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from s3edit.errors import InputError
from s3edit.face.mask import ATTRIBUTE_REGIONS, MOUTH
from s3edit.portraits.glasses import face_frame
from s3edit.portraits.prepare import (
    CLASSIC_SMILING_JOB_DIR,
    JOB_DIR,
    SMILING_JOB_DIR,
    PrepareConfig,
    load_portraits,
    pairs_path,
    prepare_portraits,
    write_smiling_job,
)
from s3edit.portraits.smiling import (
    CLASSIC_SMILE,
    SmileStyle,
    classic_smile_rows,
    composite_mask,
    draw_smile,
    register,
    smile_composite,
    smile_moves,
    smiling_pairs,
    warp_to,
)

PAINT = (250, 250, 250)


@pytest.fixture(scope="module")
def aligned(make_folder, tmp_path_factory):
    """Two aligned astronaut crops (64 px) as one London sitter, neutral and smiling."""
    root = tmp_path_factory.mktemp("smiling")
    out = root / "aligned"
    prepare_portraits(make_folder(root / "photos"), out, PrepareConfig(size=64))
    return out


def test_pairs_are_the_people_photographed_both_ways():
    items = [{"source": "london", "person": "a", "smiling": "no"},
             {"source": "london", "person": "b", "smiling": "yes"},
             {"source": "canada", "person": "c", "smiling": "no"},
             {"source": "london", "person": "a", "smiling": "yes"},
             {"source": "canada", "person": "c", "smiling": "yes"},
             {"source": "london", "person": "d", "smiling": "no"}]
    assert smiling_pairs(items).tolist() == [[0, 3]]
    assert smiling_pairs(items, "canada").tolist() == [[2, 4]]
    with pytest.raises(InputError, match="no person of 'pixabay' is photographed both neutral and smiling"):
        smiling_pairs(items, "pixabay")


def moved_smile(crop: np.ndarray, lnd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop moved by a small similarity (3 degrees, 1.04x, a few px) with its mouth
    painted white: a stand-in for the same person's smiling photo -> (image, landmarks,
    the similarity)."""
    size = crop.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 3.0, 1.04)
    matrix[:, 2] += (1.5, -1.0)
    moved = cv2.warpAffine(crop, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    moved_lnd = (lnd @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    cv2.fillPoly(moved, [np.rint(moved_lnd[MOUTH[0]:60]).astype(np.int32)], PAINT)
    return moved, moved_lnd, matrix


def test_the_composite_is_the_neutral_crop_with_the_registered_smile_inside_the_region(aligned):
    portraits = load_portraits(aligned)
    crop, lnd = portraits.arrays["crops"][0], portraits.arrays["landmarks"][0]
    smiling, smiling_lnd, matrix = moved_smile(crop, lnd)

    back = register(smiling_lnd, lnd)  # undoes the move
    undo = cv2.invertAffineTransform(matrix)
    np.testing.assert_allclose(back, undo, atol=1e-3)

    out, out_lnd = smile_composite(crop, lnd, smiling, smiling_lnd)
    mask = composite_mask(np.stack([lnd, lnd]), 64)
    assert (out[mask == 0] == crop[mask == 0]).all()  # outside the region: the neutral crop, exactly
    assert 0.05 < (mask > 0).mean() < 0.5
    lips = np.zeros((64, 64), np.uint8)
    cv2.fillPoly(lips, [np.rint(lnd[MOUTH[0]:60]).astype(np.int32)], 1)
    inner = cv2.erode(lips, np.ones((3, 3), np.uint8)).astype(bool)
    assert inner.sum() > 5 and np.abs(out[inner].astype(int) - PAINT).max() < 30  # the smile, where the mouth is
    np.testing.assert_allclose(out_lnd[MOUTH[0]:MOUTH[1]], lnd[MOUTH[0]:MOUTH[1]], atol=1e-2)
    np.testing.assert_array_equal(out_lnd[:MOUTH[0]], lnd[:MOUTH[0]])


def test_composite_mask_is_the_union_of_both_mouths_regions_feathered(aligned):
    lnd = load_portraits(aligned).arrays["landmarks"][0]
    wide = lnd.copy()
    wide[MOUTH[0]:MOUTH[1], 0] = (wide[MOUTH[0]:MOUTH[1], 0] - 32) * 1.3 + 32  # a wider mouth
    one = ATTRIBUTE_REGIONS["Smiling"].box(torch.from_numpy(lnd[None]), 64)[0].numpy()
    both = ATTRIBUTE_REGIONS["Smiling"].box(torch.from_numpy(np.stack([lnd, wide])), 64).any(0).numpy()
    mask = composite_mask(np.stack([lnd, wide]), 64)
    assert both.sum() > one.sum()
    assert (mask[both] > 0.25).all() and mask.max() == pytest.approx(1.0, abs=1e-3)
    assert 0 < mask[~both].max() < 0.75  # soft edge, no seam


def test_smiling_job_and_its_pairs_file(aligned):
    from s3edit.job import Job
    from s3edit.train.pairs import read_pairs, resolve_pairs

    portraits = load_portraits(aligned)
    for item, smiling in zip(portraits.items, ("no", "yes")):
        item |= {"source": "london", "person": "p0", "smiling": smiling}
    job_dir, n = write_smiling_job(portraits, aligned / SMILING_JOB_DIR)
    assert n == 1
    job = Job.open(job_dir)
    made = job.read_crops([0])[0]
    expected, lnd = smile_composite(*(portraits.arrays[k][i] for i in (0,) for k in ("crops", "landmarks")),
                                    portraits.arrays["crops"][1], portraits.arrays["landmarks"][1])
    np.testing.assert_array_equal(made, expected)
    np.testing.assert_allclose(job.read_track()["crop_landmarks"][0], lnd, atol=1e-5)
    pairs = read_pairs(pairs_path(job_dir))
    assert pairs.attribute == "Smiling" and pairs.frames.tolist() == [[0, 0]]
    assert pairs.without.resolve() == (aligned / JOB_DIR).resolve()
    assert resolve_pairs(pairs, [aligned / JOB_DIR, job_dir], [np.arange(2), np.arange(1)]).tolist() == [[0, 2]]


def test_the_classic_smile_moves_the_mouth_by_its_sizes_in_the_faces_frame(aligned):
    lnd = load_portraits(aligned).arrays["landmarks"][0].astype(np.float64)
    frame = face_frame(lnd)
    style = SmileStyle(widen=0.1, lift=0.12, rise=0.05, drop=0.06, part=0.1)
    moved = smile_moves(lnd, style)
    np.testing.assert_array_equal(moved[:MOUTH[0]], lnd[:MOUTH[0]].astype(np.float32))  # only the mouth moves
    before, after = frame.to_face(lnd), frame.to_face(moved)
    move = after - before
    np.testing.assert_allclose(move[48], [-0.1, -0.12], atol=1e-5)  # image-left corner: out (left) and up
    np.testing.assert_allclose(move[54], [0.1, -0.12], atol=1e-5)

    def opening(uv):  # between the inner lips' middle points, down the face
        return uv[66, 1] - uv[62, 1]

    middle = 1 - ((before[[62, 66], 0] - (before[48, 0] + before[54, 0]) / 2) / ((before[54, 0] - before[48, 0]) / 2)) ** 2
    assert opening(after) - opening(before) == pytest.approx(0.05 * middle[0] + 0.1 * middle[1], abs=0.01)
    assert move[51, 1] < -0.03 and move[57, 1] > 0.03  # the upper lip up, the lower lip down
    still = smile_moves(lnd, SmileStyle(widen=0, lift=0, rise=0, drop=0, part=0))
    np.testing.assert_allclose(still, lnd, atol=1e-4)


def test_the_warp_carries_the_mouth_to_the_moved_landmarks_and_keeps_the_rest(aligned):
    lnd = load_portraits(aligned).arrays["landmarks"][0].astype(np.float64)
    image = np.full((64, 64, 3), 100, np.uint8)
    corner = np.rint(lnd[48]).astype(int)
    image[corner[1] - 1:corner[1] + 2, corner[0] - 1:corner[0] + 2] = 250  # a bright dot on the image-left corner
    image[5:8, 5:8] = 30  # and a dark one far from the mouth
    np.testing.assert_array_equal(warp_to(image, lnd, lnd), image)  # nothing moved: the same image

    moved = smile_moves(lnd, CLASSIC_SMILE)
    out = warp_to(image, lnd, moved).astype(np.float64)
    bright = out[..., 0] > 175
    ys, xs = np.nonzero(bright)
    centre = np.array([xs.mean(), ys.mean()])
    shift = corner - lnd[48]  # the dot sits on the rounded corner
    assert np.linalg.norm(centre - (moved[48] + shift)) < 0.75  # the dot went with the corner
    assert np.linalg.norm(moved[48] - lnd[48]) > 2
    assert np.abs(out[5:8, 5:8] - 30).max() < 8  # far from the mouth the warp moves well under a pixel


def test_the_warp_takes_landmarks_that_coincide(aligned):
    """Some faces have two landmarks on one pixel: the spline takes that point once and
    still carries the mouth corner to its moved place (the system would be singular)."""
    lnd = load_portraits(aligned).arrays["landmarks"][0].astype(np.float64)
    lnd[0] = lnd[1]  # jaw point 0 on jaw point 1
    image = np.full((64, 64, 3), 100, np.uint8)
    corner = np.rint(lnd[48]).astype(int)
    image[corner[1] - 1:corner[1] + 2, corner[0] - 1:corner[0] + 2] = 250
    np.testing.assert_array_equal(warp_to(image, lnd, lnd), image)
    moved = smile_moves(lnd, CLASSIC_SMILE)
    ys, xs = np.nonzero(warp_to(image, lnd, moved)[..., 0] > 175)
    assert np.linalg.norm(np.array([xs.mean(), ys.mean()]) - (moved[48] + corner - lnd[48])) < 0.75


def test_draw_smile_changes_the_smiling_region_only_and_shows_teeth(aligned):
    portraits = load_portraits(aligned)
    crop, lnd = portraits.arrays["crops"][0], portraits.arrays["landmarks"][0]
    out, moved = draw_smile(crop, lnd)
    np.testing.assert_allclose(moved, smile_moves(lnd.astype(np.float64), CLASSIC_SMILE), atol=1e-5)
    mask = composite_mask(np.stack([lnd, moved]), 64)
    assert (out[mask == 0] == crop[mask == 0]).all()
    assert np.abs(out.astype(int) - crop).max() > 60  # a visible change
    opening = np.zeros((64, 64), np.uint8)
    cv2.fillPoly(opening, [np.rint(moved[60:68]).astype(np.int32)], 1)
    inside = cv2.erode(opening, np.ones((3, 3), np.uint8)).astype(bool) & (mask > 0.99)
    teeth = np.abs(out.astype(np.float32) - np.float32(CLASSIC_SMILE.teeth)).max(-1) < (1 - CLASSIC_SMILE.teeth_alpha) * 255
    assert (teeth & inside).sum() >= 2  # the lips part by a few pixels even at 64 px, teeth between them


def test_classic_smiling_job_draws_on_the_faces_not_photographed_smiling(aligned):
    from s3edit.job import Job
    from s3edit.train.pairs import read_pairs

    portraits = load_portraits(aligned)
    for item, smiling in zip(portraits.items, ("", "yes")):
        item |= {"source": "pixabay", "smiling": smiling}
    assert classic_smile_rows(portraits.items).tolist() == [0]
    assert classic_smile_rows(portraits.items, ("london",)).tolist() == []
    with pytest.raises(InputError, match="no faces to draw the classic smile on"):
        write_smiling_job(portraits, aligned / CLASSIC_SMILING_JOB_DIR, "classic", np.zeros(0, np.int64))
    with pytest.raises(InputError, match="unknown smile style 'grin'; one of own, classic"):
        write_smiling_job(portraits, aligned / CLASSIC_SMILING_JOB_DIR, "grin")
    job_dir, n = write_smiling_job(portraits, aligned / CLASSIC_SMILING_JOB_DIR, "classic")
    assert n == 1
    job = Job.open(job_dir)
    expected, lnd = draw_smile(portraits.arrays["crops"][0], portraits.arrays["landmarks"][0])
    np.testing.assert_array_equal(job.read_crops([0])[0], expected)
    np.testing.assert_allclose(job.read_track()["crop_landmarks"][0], lnd, atol=1e-5)
    pairs = read_pairs(pairs_path(job_dir))
    assert pairs.attribute == "Smiling" and pairs.frames.tolist() == [[0, 0]]
    assert pairs.without.resolve() == (aligned / JOB_DIR).resolve()
