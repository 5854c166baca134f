"""Aligning stills: padding, largest face, tight crops, the dataset folder and its job."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import data

from s3edit.portraits.prepare import (
    ARRAYS_FILE, GLASSES_JOB_DIR, JOB_DIR, META_FILE, PrepareConfig, align_portrait, largest_face,
    load_portraits, pad_image, prepare_portraits, write_glasses_job, pairs_path, CLASSIC_GLASSES_JOB_DIR, SUNGLASSES_JOB_DIR,
)
from s3edit.errors import InputError, OutputError
from s3edit.face.detect import Face, make_detector
from s3edit.face.landmarks import LEFT_EYE, RIGHT_EYE


@pytest.fixture(scope="module")
def detector():
    return make_detector("dlib")


def eyes(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[RIGHT_EYE].mean(0), lm[LEFT_EYE].mean(0)])


def test_pad_image_keeps_the_photo_and_fades_the_border():
    image = data.astronaut()[:200, :100]
    padded, pad = pad_image(image, 0.5)
    assert pad == 100
    assert padded.shape == (400, 300, 3)
    np.testing.assert_array_equal(padded[pad:pad + 200, pad:pad + 100], image)
    median = np.median(image.reshape(-1, 3), axis=0)
    np.testing.assert_allclose(padded[0, 0], median, atol=1)  # outer corner: median colour
    assert np.array_equal(pad_image(image, 0.0)[0], image)


def test_tight_crop_is_aligned_like_the_full_photo(detector, tight_box):
    image = data.astronaut()
    full = align_portrait(image, detector, size=128)
    tight_image = image[tight_box]
    tight = align_portrait(tight_image, detector, size=128)
    assert tight is not None and full is not None
    assert tight.crop.shape == (128, 128, 3) and tight.crop.dtype == np.uint8
    assert tight.faces >= 1
    # same face, photo coordinates: tight + offset == full (within landmark noise)
    offset = np.array([tight_box[1].start, tight_box[0].start])
    np.testing.assert_allclose(eyes(tight.image_landmarks) + offset, eyes(full.image_landmarks), atol=2.5)
    np.testing.assert_allclose(tight.quad + offset, full.quad, atol=4)
    # FFHQ geometry: eyes level, symmetric about the centre, in the upper half
    e = eyes(tight.landmarks)
    assert abs(e[0, 1] - e[1, 1]) < 2
    assert abs(e.mean(0)[0] - 63.5) < 2
    assert 40 < e.mean(0)[1] < 64
    # the crop inside the photo matches the full photo's crop
    inner = np.s_[40:90, 40:90]
    assert np.abs(tight.crop[inner].astype(int) - full.crop[inner].astype(int)).mean() < 12
    # landmarks map photo -> crop through the transform
    h = np.c_[tight.image_landmarks, np.ones(68)] @ tight.transform.T
    np.testing.assert_allclose(h[:, :2], tight.landmarks, atol=1e-3)


def test_no_face_gives_none(detector):
    noise = np.random.default_rng(0).integers(0, 255, (160, 120, 3), dtype=np.uint8)
    assert align_portrait(noise, detector) is None


def test_largest_face_and_inside_filter():
    lm = np.zeros((68, 2), np.float32)
    small = Face(np.array([0, 0, 10, 10], np.float32), lm, 1.0)
    big = Face(np.array([50, 50, 90, 90], np.float32), lm, 0.5)
    assert largest_face([small, big]) is big
    assert largest_face([small, big], inside=(0, 0, 20, 20)) is small
    assert largest_face([], inside=None) is None


def test_prepare_folder_counts_resumes_and_makes_a_training_job(make_folder, tmp_path):
    from s3edit.job import Job
    from s3edit.train.data import load_job_crops

    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    seen = []
    result = prepare_portraits(root, out, PrepareConfig(size=64), on_item=seen.append)
    assert (result.aligned, result.skipped) == (2, 1)
    assert result.counts == {"studio": {"aligned": 1, "skipped": 0}, "web": {"aligned": 1, "skipped": 1}}
    assert sorted(seen) == [False, True, True]
    meta = json.loads((out / META_FILE).read_text())
    assert meta["skipped"][0]["file"] == "web/noise.png" and meta["skipped"][0]["reason"] == "no face"

    portraits = load_portraits(out)
    assert portraits.arrays["crops"].shape == (2, 64, 64, 3)
    assert list(portraits.column("person")) == ["p0", "p1"]
    assert not (out / "shards").exists()

    # a rerun does no work; other settings are refused
    again = prepare_portraits(root, out, PrepareConfig(size=64), on_item=seen.append)
    assert again.resumed == 3 and len(seen) == 3
    with pytest.raises(OutputError, match="prepared from other photos or settings; pass --overwrite"):
        prepare_portraits(root, out, PrepareConfig(size=32))

    # tune's loader reads the job: crops and landmarks scaled to the model size
    crops = load_job_crops(Job.open(out / JOB_DIR), 32)
    assert crops.crops.shape == (2, 3, 32, 32)
    assert float(crops.crops.min()) >= -1 and float(crops.crops.max()) <= 1
    expected = (portraits.arrays["landmarks"] + 0.5) * 0.5 - 0.5
    np.testing.assert_allclose(crops.landmarks.numpy(), expected, atol=1e-5)


def test_glasses_job_holds_the_twins_of_the_glasses_sources(make_folder, tmp_path):
    from s3edit.portraits.glasses import CLASSIC, glasses_twins
    from s3edit.job import Job
    from s3edit.train.data import load_job_crops

    out = tmp_path / "aligned"
    prepare_portraits(make_folder(tmp_path / "photos"), out, PrepareConfig(size=64))
    portraits = load_portraits(out)
    portraits.items[1]["source"] = "london"  # the head's glasses sources; "studio" is not one
    job_dir, n = write_glasses_job(portraits, out / GLASSES_JOB_DIR, seed=3)
    assert n == 1
    twins = load_job_crops(Job.open(job_dir), 64)
    plain = load_job_crops(Job.open(out / JOB_DIR), 64)
    assert twins.crops.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(twins.landmarks.numpy(), plain.landmarks[1:].numpy())
    expected = glasses_twins(portraits.arrays["crops"][1:], portraits.arrays["landmarks"][1:],
                             portraits.arrays["rows"][1:], seed=3)
    np.testing.assert_allclose(((twins.crops[0].permute(1, 2, 0) + 1) * 127.5).numpy(), expected[0], atol=0.01)
    changed = (twins.crops[0] != plain.crops[1]).any(0)
    assert 0.02 < float(changed.float().mean()) < 0.5  # glasses on the eyes, not a new picture

    # the pairs file beside it names twin 0 as face 1 of job/, and tune's rows follow
    from s3edit.train.pairs import read_pairs, resolve_pairs

    pairs = read_pairs(pairs_path(job_dir))
    assert pairs.attribute == "Eyeglasses" and pairs.frames.tolist() == [[1, 0]]
    assert pairs.without.resolve() == (out / JOB_DIR).resolve() and pairs.with_.resolve() == job_dir.resolve()
    rows = resolve_pairs(pairs, [out / JOB_DIR, job_dir], [np.arange(2), np.arange(1)])
    assert rows.tolist() == [[1, 2]]

    # --style classic: one fixed style for every face, its own folder and pairs file
    classic_dir, _ = write_glasses_job(portraits, out / CLASSIC_GLASSES_JOB_DIR, seed=3, style="classic")
    classic = load_job_crops(Job.open(classic_dir), 64)
    expected = glasses_twins(portraits.arrays["crops"][1:], portraits.arrays["landmarks"][1:],
                             portraits.arrays["rows"][1:], style=CLASSIC)
    np.testing.assert_allclose(((classic.crops[0].permute(1, 2, 0) + 1) * 127.5).numpy(), expected[0], atol=0.01)
    assert not torch.equal(classic.crops, twins.crops)
    assert read_pairs(pairs_path(classic_dir)).frames.tolist() == [[1, 0]]
    # --style sunglasses: the second style, pairs of the Sunglasses attribute
    sun_dir, _ = write_glasses_job(portraits, out / SUNGLASSES_JOB_DIR, seed=3, style="sunglasses")
    sun = load_job_crops(Job.open(sun_dir), 64)
    assert not torch.equal(sun.crops, classic.crops)
    sun_pairs = read_pairs(pairs_path(sun_dir))
    assert sun_pairs.attribute == "Sunglasses" and sun_pairs.frames.tolist() == [[1, 0]]
    with pytest.raises(InputError, match="unknown glasses style 'bold'"):
        write_glasses_job(portraits, out / "x", style="bold")


def test_prepare_resumes_from_shards(make_folder, tmp_path, monkeypatch):
    """An interrupted run keeps its finished shards; the rerun only aligns the rest."""
    import s3edit.portraits.prepare as portraits_mod

    root = make_folder(tmp_path / "photos", n_faces=3)
    out = tmp_path / "aligned"
    monkeypatch.setattr(portraits_mod, "CHUNK", 2)
    calls = []
    real_merge = portraits_mod._merge

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(portraits_mod, "_merge", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_portraits(root, out, PrepareConfig(size=32))
    assert len(list((out / "shards").iterdir())) == 2
    monkeypatch.setattr(portraits_mod, "_merge", real_merge)
    (out / "shards" / "000002.safetensors").unlink()  # as if killed during the second shard
    result = prepare_portraits(root, out, PrepareConfig(size=32), on_item=calls.append)
    assert len(calls) == 2 and result.resumed == 2
    assert (result.aligned, result.skipped) == (3, 1)
    assert (out / ARRAYS_FILE).is_file()


def test_prepare_refuses_foreign_folders_and_missing_photos(make_folder, tmp_path):
    root = make_folder(tmp_path / "photos")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="is not empty and holds no aligned portraits"):
        prepare_portraits(root, busy)
    with pytest.raises(InputError, match="does not exist"):
        prepare_portraits(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(InputError, match="holds no finished aligned portraits; run"):
        load_portraits(tmp_path)


def test_shared_faces_sample(shared_faces, tmp_path):
    """~20 real portraits spread over all sources: nearly all align, every source appears."""
    result = prepare_portraits(shared_faces, tmp_path / "aligned", PrepareConfig(limit=20))
    assert result.aligned + result.skipped == 20
    assert result.aligned >= 18
    assert set(result.counts) == {"canada", "congress", "london", "pixabay"}
    portraits = load_portraits(tmp_path / "aligned")
    e = np.stack([eyes(lm) for lm in portraits.arrays["landmarks"]])  # (M, 2, 2)
    # aligned: eye midpoints near the same place in every crop
    assert np.abs(e.mean(1)[:, 0] - 63.5).max() < 4
    assert np.ptp(e.mean(1)[:, 1]) < 8
