"""The encode stage on the example clip with a small weight set made here: latents on
disk, skip/redo rules, resume after an interruption, the CLI and its errors.

The weight set and the aligned/encoded clip are fixtures of tests/pipeline/conftest.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from s3edit.job import SEMANTICS_FILE, Job
from s3edit.model import ddim
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.model.frames import to_model
from s3edit.pipeline import encode as enc
from s3edit.pipeline.options import run_options
from s3edit.weights.load import load_weights, weights_fingerprint


def test_latents_hold_every_valid_frame(encoded_master, small_weights, tiny):
    job = Job.open(encoded_master)
    frames = job.aligned_frames()
    lat = enc.load_latents(job)
    V = len(frames.indices)
    assert V >= tiny.frames - 2  # the astronaut is found in (nearly) every frame
    assert lat.indices.tolist() == frames.indices.tolist()
    assert lat.z_id.shape == (V, 128) and lat.z_lnd.shape == (V, 102) and lat.z_face.shape == (V, 64)
    # z_id_rep: the normalised clip mean; z_lnd: the job's landmarks (jaw dropped) in [0, 1]
    torch.testing.assert_close(lat.z_id_rep, torch.nn.functional.normalize(lat.z_id.mean(0), dim=0))
    expected = (frames.crop_landmarks[:, 17:] + 0.5) / tiny.crop_size
    np.testing.assert_allclose(lat.z_lnd.numpy(), expected.reshape(V, 102), atol=1e-6)
    chunks = [load_file(str(p)) for p in lat.chunks]
    assert [len(c["index"]) for c in chunks][:-1] == [6] * (len(chunks) - 1)  # batch-sized chunks
    assert all(c["x_T"].dtype == torch.float16 and c["x_T"].shape[1:] == (3, 32, 32) for c in chunks)
    assert torch.cat([c["index"] for c in chunks]).tolist() == frames.indices.tolist()
    entry = job.stage("encode")
    assert entry["done"] and entry["params"]["steps"] == tiny.steps
    assert entry["params"]["weights"] == weights_fingerprint(small_weights)


def test_x_T_is_the_ddim_inversion_of_each_crop(encoded_master, small_weights, tiny):
    job = Job.open(encoded_master)
    lat = enc.load_latents(job)
    lw = load_weights(small_weights, torch.device("cpu"))
    index, x_T = next(enc.iter_x_T(lat))
    crops = to_model(job.read_crops(index[:2].numpy()), 32)
    # the fixture encodes with the default corrections, and the job records them
    assert job.stage("encode")["params"]["fixed_point"] == ddim.DEFAULT_FIXED_POINT == 2
    expected = ddim.ddim_encode(lw.model, crops, lat.z_face[lat.rows(index[:2])], tiny.steps,
                                fixed_point=ddim.DEFAULT_FIXED_POINT)
    torch.testing.assert_close(x_T[:2], expected, rtol=0, atol=2e-3)  # fp16 on disk


def test_rerun_skips_and_other_steps_reencode(encoded, small_weights, tiny):
    before = {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    enc.encode_job(encoded, run_options(small_weights, steps=tiny.steps, device="cpu"))
    assert before == {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    enc.encode_job(encoded, run_options(small_weights, steps=3, batch_size=50, device="cpu"))
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["steps"] == 3
    assert len(enc.load_latents(job).chunks) == 1  # the old 6-frame chunks are gone
    # only the DDIM part depends on the steps: the semantics were kept
    sem = encoded / "latents" / SEMANTICS_FILE
    assert sem.stat().st_mtime_ns == before[SEMANTICS_FILE]


def test_other_weights_reencode(encoded, tmp_path, make_weight_set, tiny):
    other = make_weight_set(tmp_path / "other", seed=1)
    old = enc.load_latents(Job.open(encoded)).z_face  # z_id is dlib's net, the same in both sets
    enc.encode_job(encoded, run_options(other, steps=tiny.steps, device="cpu"))
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["weights"] == weights_fingerprint(other)
    assert not torch.equal(enc.load_latents(job).z_face, old)


def test_interrupted_encode_resumes_at_the_next_chunk(aligned, small_weights, encoded_master, tiny, monkeypatch):
    calls = {"n": 0}
    real = ddim.ddim_encode

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ddim, "ddim_encode", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        enc.encode_job(aligned, run_options(small_weights, steps=tiny.steps, batch_size=6, device="cpu",
                                             precision="fp32"))
    kept = sorted((aligned / "latents").glob("xT.*"))
    assert len(kept) == 2 and not Job.open(aligned).is_done("encode")
    mtimes = [p.stat().st_mtime_ns for p in kept]
    calls["n"] = -100
    enc.encode_job(aligned, run_options(small_weights, steps=tiny.steps, batch_size=6, device="cpu",
                                             precision="fp32"))
    assert [p.stat().st_mtime_ns for p in kept] == mtimes  # finished chunks were not redone
    assert calls["n"] == -100 + len(enc.load_latents(Job.open(aligned)).chunks) - 2
    # and the result equals an uninterrupted run (encoded_master's, also fp32)
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
    assert summary["params"]["steps"] == 2 and summary["frames"] == len(Job.open(aligned).aligned_frames().indices)


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "Invalid value for '--steps'"),
    (["--steps", "1001"], "--steps must be between 1 and 1000"),
    (["--device", "tpu"], "Invalid value for '--device'"),
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
