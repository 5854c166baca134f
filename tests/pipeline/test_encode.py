"""The encode stage on the example clip with a small weight set made here: latents on
disk, skip/redo rules, resume after an interruption, the CLI and its errors.

``small_weights`` and ``aligned`` are shared with test_edit.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from s3edit.job import Job
from s3edit.model import ddim
from s3edit.model.attributes import CELEBA_ATTRIBUTES
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.model.attributes import Classifier
from s3edit.weights.weightset import save_weight_set
from s3edit.pipeline import encode as enc

CROP_SIZE = 64  # align --size 64: the tiny model (32 px) reads resized crops
STEPS = 5
FRAMES = 16  # the unit tests align the first 16 frames (the identity net dominates the cost)


def make_weight_set(folder: Path, seed: int = 0) -> Path:
    """The tiny-32-dlib preset (dlib identity, landmarks from align), random weights (the
    zero-initialised layers too, so eps depends on x_t, t and z_face) and a random
    classifier over the 40 CelebA names."""
    torch.manual_seed(seed)
    config = preset("tiny-32-dlib")
    model = build_dva(config).eval()
    for p in model.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    D = config.id_dim
    g = torch.Generator().manual_seed(seed)
    classifier = Classifier(torch.randn(40, D, generator=g), torch.randn(40, generator=g),
                            torch.randn(1, D, generator=g) * 0.01, torch.full((1, D), 0.04),
                            list(CELEBA_ATTRIBUTES))
    return save_weight_set(folder, model, classifier=classifier,
                           meta={"name": f"tiny-test-{seed}", "licence": "test only"})


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory) -> Path:
    return make_weight_set(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="session")
def aligned_master(tmp_path_factory, example_clip) -> Path:
    from s3edit.pipeline.align import align_video

    job = align_video(example_clip, tmp_path_factory.mktemp("jobs") / "astronaut.s3job", size=CROP_SIZE,
                      max_frames=FRAMES)
    return job.root


@pytest.fixture
def aligned(aligned_master, tmp_path) -> Path:
    """A fresh copy of the aligned example clip (first 16 frames, 64 px) for one test."""
    return Path(shutil.copytree(aligned_master, tmp_path / "astronaut.s3job"))


@pytest.fixture(scope="session")
def encoded_master(aligned_master, small_weights, tmp_path_factory) -> Path:
    root = Path(shutil.copytree(aligned_master, tmp_path_factory.mktemp("enc") / "astronaut.s3job"))
    enc.encode_job(root, small_weights, steps=STEPS, batch_size=6, device="cpu")
    return root


@pytest.fixture
def encoded(encoded_master, tmp_path) -> Path:
    return Path(shutil.copytree(encoded_master, tmp_path / "astronaut.s3job"))


def test_latents_hold_every_valid_frame(encoded_master, small_weights):
    job = Job.open(encoded_master)
    frames = enc.aligned_frames(job)
    lat = enc.load_latents(job)
    V = len(frames.indices)
    assert V >= FRAMES - 2  # the astronaut is found in (nearly) every frame
    assert lat.indices.tolist() == frames.indices.tolist()
    assert lat.z_id.shape == (V, 128) and lat.z_lnd.shape == (V, 102) and lat.z_face.shape == (V, 64)
    # z_id_rep: the normalised clip mean; z_lnd: the job's landmarks (jaw dropped) in [0, 1]
    torch.testing.assert_close(lat.z_id_rep, torch.nn.functional.normalize(lat.z_id.mean(0), dim=0))
    expected = (frames.crop_landmarks[:, 17:] + 0.5) / CROP_SIZE
    np.testing.assert_allclose(lat.z_lnd.numpy(), expected.reshape(V, 102), atol=1e-6)
    chunks = [load_file(str(p)) for p in lat.chunks]
    assert [len(c["index"]) for c in chunks][:-1] == [6] * (len(chunks) - 1)  # batch-sized chunks
    assert all(c["x_T"].dtype == torch.float16 and c["x_T"].shape[1:] == (3, 32, 32) for c in chunks)
    assert torch.cat([c["index"] for c in chunks]).tolist() == frames.indices.tolist()
    entry = job.stage("encode")
    assert entry["done"] and entry["params"]["steps"] == STEPS
    assert entry["params"]["weights"] == enc.weights_fingerprint(small_weights)


def test_x_T_is_the_ddim_inversion_of_each_crop(encoded_master, small_weights):
    job = Job.open(encoded_master)
    lat = enc.load_latents(job)
    lw = enc.load_weights(small_weights, torch.device("cpu"))
    index, x_T = next(enc.iter_x_T(lat))
    crops = enc.read_crops([job.crop_path(int(i)) for i in index[:2]], 32)
    expected = ddim.ddim_encode(lw.model, crops, lat.z_face[lat.rows(index[:2])], STEPS)
    torch.testing.assert_close(x_T[:2], expected, rtol=0, atol=2e-3)  # fp16 on disk


def test_rerun_skips_and_other_steps_reencode(encoded, small_weights):
    before = {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    enc.encode_job(encoded, small_weights, steps=STEPS, device="cpu")
    assert before == {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    enc.encode_job(encoded, small_weights, steps=3, batch_size=50, device="cpu")
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["steps"] == 3
    assert len(enc.load_latents(job).chunks) == 1  # the old 6-frame chunks are gone
    # only the DDIM part depends on the steps: the semantics were kept
    sem = encoded / "latents" / enc.SEMANTICS_FILE
    assert sem.stat().st_mtime_ns == before[enc.SEMANTICS_FILE]


def test_other_weights_reencode(encoded, tmp_path):
    other = make_weight_set(tmp_path / "other", seed=1)
    old = enc.load_latents(Job.open(encoded)).z_id
    enc.encode_job(encoded, other, steps=STEPS, device="cpu")
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["weights"] == enc.weights_fingerprint(other)
    assert not torch.equal(enc.load_latents(job).z_id, old)


def test_interrupted_encode_resumes_at_the_next_chunk(aligned, small_weights, encoded_master, monkeypatch):
    calls = {"n": 0}
    real = ddim.ddim_encode

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ddim, "ddim_encode", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        enc.encode_job(aligned, small_weights, steps=STEPS, batch_size=6, device="cpu")
    kept = sorted((aligned / "latents").glob("xT.*"))
    assert len(kept) == 2 and not Job.open(aligned).is_done("encode")
    mtimes = [p.stat().st_mtime_ns for p in kept]
    calls["n"] = -100
    enc.encode_job(aligned, small_weights, steps=STEPS, batch_size=6, device="cpu")
    assert [p.stat().st_mtime_ns for p in kept] == mtimes  # finished chunks were not redone
    assert calls["n"] == -100 + len(enc.load_latents(Job.open(aligned)).chunks) - 2
    # and the result equals an uninterrupted run
    a = torch.cat([x for _, x in enc.iter_x_T(enc.load_latents(Job.open(aligned)))])
    b = torch.cat([x for _, x in enc.iter_x_T(enc.load_latents(Job.open(encoded_master)))])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dva_semantics_use_the_landmark_net():
    """DVA's own configs (lnd_encoder mobilenet) take z_lnd from the crop, not the job."""
    torch.manual_seed(0)
    model = build_dva(preset("tiny-32")).eval()
    crops = torch.rand(2, 3, 32, 32) * 2 - 1
    z_id, z_lnd = enc.frame_semantics(model, crops, torch.zeros(2, 68, 2))
    assert z_id.shape == (2, 512) and z_lnd.shape == (2, 102)
    assert z_lnd.abs().sum() > 0 and float(z_lnd.min()) >= 0 and float(z_lnd.max()) <= 1
    torch.testing.assert_close(z_id.norm(dim=1), torch.ones(2))


def test_cli_encode(cli, aligned, small_weights):
    result = cli("encode", str(aligned), "--weights", str(small_weights), "--steps", "2",
                 "--batch-size", "16", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["params"]["steps"] == 2 and summary["frames"] == len(enc.aligned_frames(Job.open(aligned)).indices)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be between 1 and 1000"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--weights", "/nonexistent/set"], "does not exist"),
])
def test_cli_encode_errors(cli, aligned, small_weights, args, message):
    result = cli("encode", str(aligned), "--weights", str(small_weights), *args)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_encode_needs_an_aligned_job(cli, tmp_path, small_weights):
    result = cli("encode", str(tmp_path), "--weights", str(small_weights))
    assert result.exit_code == 1
    assert "is not an s3edit job folder" in result.stderr
