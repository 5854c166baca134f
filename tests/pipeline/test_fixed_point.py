"""Fixed-point corrections of the encoder through the stages: the job records them (only
when there are any, so jobs encoded without stay valid), other corrections re-encode x_T
only, later runs keep the job's, an edit is redone on new x_T, and the CLI's option and
its errors (docs/sampler.md, "Fixed-point inversion")."""

from __future__ import annotations

import json

import pytest
import torch

from s3edit.errors import InputError
from s3edit.job import EDIT_FILE, SEMANTICS_FILE, Job
from s3edit.model import ddim
from s3edit.model.frames import to_model
from s3edit.pipeline import edit as ed
from s3edit.pipeline import encode as enc
from s3edit.pipeline.options import run_options

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_corrections_reencode_x_T_only_and_are_kept(encoded, small_weights, tiny):
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["fixed_point"] == 2  # the default, recorded
    assert run_options(job=job, device="cpu").fixed_point == 2
    semantics = (encoded / "latents" / SEMANTICS_FILE).stat().st_mtime_ns
    run = run_options(small_weights, steps=tiny.steps, device="cpu", fixed_point=3, precision="fp32")
    latents = enc.encode_job(encoded, run)
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["fixed_point"] == 3 and job.is_done("encode")
    assert (encoded / "latents" / SEMANTICS_FILE).stat().st_mtime_ns == semantics  # kept
    index, x_T = next(enc.iter_x_T(latents))
    crops = to_model(job.read_crops(index.numpy()), 32)  # the stage's first batch
    z_face = latents.z_face[latents.rows(index)]
    expected = ddim.ddim_encode(run.weights.model, crops, z_face, tiny.steps, fixed_point=3)
    torch.testing.assert_close(x_T, expected, rtol=1e-3, atol=2e-3)  # fp16 on disk
    plain = ddim.ddim_encode(run.weights.model, crops, z_face, tiny.steps)
    assert ((plain - expected).norm() / expected.norm()).item() > 1e-2  # the corrections changed x_T
    # later runs keep the job's corrections; the same corrections again are a skip
    assert run_options(job=job, device="cpu").fixed_point == 3
    chunks = {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    enc.encode_job(encoded, run_options(job=job, device="cpu"))
    assert chunks == {p.name: p.stat().st_mtime_ns for p in (encoded / "latents").iterdir()}
    # none: the key goes, as in a job encoded before corrections existed, which later runs keep
    enc.encode_job(encoded, run_options(job=job, device="cpu", fixed_point=0))
    job = Job.open(encoded)
    assert "fixed_point" not in job.stage("encode")["params"]
    assert run_options(job=job, device="cpu").fixed_point == 0


def test_defaults_follow_the_sampler(small_weights, aligned):
    s3 = run_options(small_weights, device="cpu")
    assert (s3.steps, s3.fixed_point) == (20, 2)
    dva = run_options(small_weights, device="cpu", sampler="dva")
    assert (dva.steps, dva.fixed_point) == (100, 0)
    assert run_options(small_weights, steps=50, device="cpu").fixed_point == 2
    # a job's x_T made by DVA's sampler says nothing of s3edit's corrections
    enc.encode_job(aligned, run_options(small_weights, steps=4, device="cpu", sampler="dva"))
    again = run_options(job=Job.open(aligned), device="cpu", sampler="s3edit")
    assert (again.steps, again.fixed_point) == (4, 2)


def test_an_edit_on_corrected_x_T_is_redone(encoded, tiny):
    first = ed.edit_job(encoded, [("Young", 0.5)], run_options(job=Job.open(encoded), device="cpu"))
    assert json.loads((first.folder / EDIT_FILE).read_text())["params"]["encode"]["fixed_point"] == 2
    again = ed.edit_job(encoded, [("Young", 0.5)],
                        run_options(job=Job.open(encoded), device="cpu", fixed_point=1))
    assert again.name == first.name and again.decoded == again.frames  # redone, not skipped
    record = json.loads((again.folder / EDIT_FILE).read_text())["params"]
    assert record["encode"]["fixed_point"] == 1


def test_corrections_errors(small_weights):
    with pytest.raises(InputError, match="--fixed-point goes with --sampler s3edit"):
        run_options(small_weights, steps=10, device="cpu", sampler="dva", fixed_point=1)
    with pytest.raises(InputError, match="--fixed-point must be 0 or more"):
        run_options(small_weights, steps=10, device="cpu", fixed_point=-1)


def test_cli_fixed_point_option(cli, aligned, small_weights):
    result = cli("encode", str(aligned), "--weights", str(small_weights), "--steps", "3", "--fixed-point", "1",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "3 DDIM steps, sampler s3edit, 1 fixed-point correction per step" in result.stdout
    assert Job.open(aligned).stage("encode")["params"]["fixed_point"] == 1
    result = cli("edit", str(aligned), "--attr", "Young", "--sampler", "dva", "--steps", "10",
                 "--fixed-point", "2", "--device", "cpu")
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("--fixed-point goes with --sampler s3edit; DVA's sampler encodes as DVA "
                                          "does, without corrections.")
    result = cli("encode", str(aligned), "--fixed-point", "-1")
    assert result.exit_code == 2 and "--fixed-point" in result.stderr
