"""The DDIM sampler and the identity rule through the stages: which sampler a run takes
(the set's default, the job's, or the one asked for), the job's record of it, a new
sampler re-encoding x_T only, the edit's record, and each weight set's identity rule
with scale 0 still the plain reconstruction (docs/sampler.md, docs/edit.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from s3edit.errors import InputError, WeightsError
from s3edit.job import EDIT_FILE, SEMANTICS_FILE, Job
from s3edit.model import ddim
from s3edit.model.attributes import edit_direction, edit_identity
from s3edit.model.frames import to_model, to_uint8
from s3edit.pipeline import edit as ed
from s3edit.pipeline import encode as enc
from s3edit.pipeline.options import IdentityRule, Sampler, run_options
from s3edit.pipeline.tune import run_source, write_output
from s3edit.train.loop import TrainConfig
from s3edit.weights.weightset import (
    CONFIG_FILE,
    DVA_RULES,
    IDENTITY_KEY,
    S3EDIT_RULES,
    SAMPLER_KEY,
    load_weight_set,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def with_config(src: Path, folder: Path, **fields) -> Path:
    """A copy of the weight set ``src`` whose config.json has ``fields`` set."""
    shutil.copytree(src, folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config.update(fields)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return folder


@pytest.fixture(scope="module")
def dva_rules_weights(small_weights, tmp_path_factory) -> Path:
    """The small set as an imported DVA set records itself: DVA's sampler and identity."""
    return with_config(small_weights, tmp_path_factory.mktemp("dva-rules") / "tiny-dva", **DVA_RULES)


def crops_of(job_root: Path, name: str) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p)) for p in sorted((job_root / "edits" / name / "crops").glob("*.png"))}


# --- which sampler a run takes ------------------------------------------------------------


def test_a_run_takes_the_sets_rules_unless_told(small_weights, dva_rules_weights, tmp_path):
    own = run_options(small_weights, steps=5, device="cpu")
    assert own.sampler is Sampler.s3edit and own.identity is IdentityRule.l2norm_mean
    assert json.loads((small_weights / CONFIG_FILE).read_text())[SAMPLER_KEY] == "s3edit"  # recorded
    dva = run_options(dva_rules_weights, steps=5, device="cpu")
    assert dva.sampler is Sampler.dva and dva.identity is IdentityRule.mean
    asked = run_options(dva_rules_weights, steps=5, device="cpu", sampler="s3edit")
    assert asked.sampler is Sampler.s3edit and asked.identity is IdentityRule.mean  # the rule stays the set's
    # a config without the fields (the bundled default's) means s3edit's rules
    config = json.loads((small_weights / CONFIG_FILE).read_text())
    bare = with_config(small_weights, tmp_path / "bare")
    (bare / CONFIG_FILE).write_text(json.dumps({k: v for k, v in config.items()
                                                if k not in (SAMPLER_KEY, IDENTITY_KEY)}))
    run = run_options(bare, steps=5, device="cpu")
    assert run.sampler is Sampler.s3edit and run.identity is IdentityRule.l2norm_mean


def test_sampler_errors(small_weights, tmp_path):
    with pytest.raises(InputError, match="unknown sampler 'ddpm'; choose one of s3edit, dva"):
        run_options(small_weights, steps=5, device="cpu", sampler="ddpm")
    with pytest.raises(InputError, match="--sampler dva takes --steps that divide 1000"):
        run_options(small_weights, steps=30, device="cpu", sampler="dva")
    odd = with_config(small_weights, tmp_path / "odd", identity="median")
    with pytest.raises(WeightsError, match="names identity 'median' in its config.json"):
        run_options(odd, steps=5, device="cpu")


# --- the job's record ---------------------------------------------------------------------


def test_another_sampler_reencodes_x_T_only(encoded, small_weights, tiny):
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["sampler"] == "s3edit"
    assert job.stage("encode")["params"]["identity"] == "l2norm_mean"
    semantics = (encoded / "latents" / SEMANTICS_FILE).stat().st_mtime_ns
    old = torch.cat([x for _, x in enc.iter_x_T(enc.load_latents(job))])
    run = run_options(small_weights, steps=tiny.steps, device="cpu", sampler="dva", precision="fp32")
    latents = enc.encode_job(encoded, run)
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["sampler"] == "dva" and job.is_done("encode")
    assert (encoded / "latents" / SEMANTICS_FILE).stat().st_mtime_ns == semantics  # kept
    index, x_T = next(enc.iter_x_T(latents))
    assert not torch.equal(torch.cat([x for _, x in enc.iter_x_T(latents)]), old)
    crops = to_model(job.read_crops(index[:2].numpy()), 32)
    expected = ddim.ddim_encode(run.weights.model, crops, latents.z_face[latents.rows(index[:2])], tiny.steps,
                                sampler="dva")
    torch.testing.assert_close(x_T[:2], expected, rtol=0, atol=2e-3)  # fp16 on disk
    # a later run with these weights keeps the job's sampler
    assert run_options(job=job, device="cpu").sampler is Sampler.dva


def test_an_edit_with_another_sampler_reencodes_and_names_it(encoded, tiny):
    fp32 = {"device": "cpu", "precision": "fp32"}  # compared with ddim_decode's fp32 below
    first = ed.edit_job(encoded, [("Young", 0.5)], run_options(job=Job.open(encoded), **fp32))
    record = json.loads((first.folder / EDIT_FILE).read_text())["params"]
    assert record["sampler"] == "s3edit" and record["encode"]["sampler"] == "s3edit"
    dva = ed.edit_job(encoded, [("Young", 0.5)],
                      run_options(job=Job.open(encoded), sampler="dva", **fp32))
    job = Job.open(encoded)
    assert job.stage("encode")["params"]["sampler"] == "dva"
    assert dva.name == first.name and dva.decoded == dva.frames  # redone, not skipped
    record = json.loads((dva.folder / EDIT_FILE).read_text())["params"]
    assert record["sampler"] == "dva" and record["encode"]["sampler"] == "dva"
    # the crops are DVA's decode of DVA's x_T
    lat = enc.load_latents(job)
    run = run_options(job=job, device="cpu")
    index, x_T = next(enc.iter_x_T(lat))
    z = ed.face_codes(run.weights.model, ed.edited_identity(lat.z_id_rep, [("Young", 0.5)], run.weights.ws.classifier),
                   lat.z_lnd[lat.rows(index[:1])], None, None)
    out = ddim.ddim_decode(run.weights.model, x_T[:1], z, tiny.steps, sampler="dva")
    got = crops_of(encoded, dva.name)[f"{int(index[0]):06d}.png"]
    assert np.abs(to_uint8(out, tiny.crop_size)[0][..., ::-1].astype(int) - got).max() <= 1


def test_cli_sampler_option(cli, aligned, small_weights):
    result = cli("encode", str(aligned), "--weights", str(small_weights), "--steps", "4", "--sampler", "dva",
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["params"]["sampler"] == "dva"
    result = cli("edit", str(aligned), "--attr", "Young", "--sampler", "ddpm")
    assert result.exit_code == 2 and "Invalid value for '--sampler'" in result.stderr
    result = cli("edit", str(aligned), "--attr", "Young", "--sampler", "dva", "--steps", "30", "--device", "cpu")
    assert result.exit_code == 1 and "--sampler dva takes --steps that divide 1000" in result.stderr


# --- the identity rule --------------------------------------------------------------------


def test_clip_identity_rules():
    z = torch.nn.functional.normalize(torch.randn(7, 16), dim=1)
    torch.testing.assert_close(enc.clip_identity(z, "mean"), z.mean(0))
    torch.testing.assert_close(enc.clip_identity(z), torch.nn.functional.normalize(z.mean(0), dim=0))
    assert enc.clip_identity(z, "mean").norm() < 1  # the mean of unit vectors is shorter


@pytest.mark.parametrize("rules", ["s3edit", "dva"])
def test_each_sets_identity_rule_and_scale_zero_is_the_reconstruction(rules, aligned, small_weights,
                                                                       dva_rules_weights, tiny):
    weights = dva_rules_weights if rules == "dva" else small_weights
    run = run_options(weights, steps=tiny.steps, device="cpu")
    lat = enc.encode_job(aligned, run)
    mean = lat.z_id.double().mean(0).float()
    if rules == "dva":
        torch.testing.assert_close(lat.z_id_rep, mean)  # DVA's plain mean, not re-normalised
    else:
        torch.testing.assert_close(lat.z_id_rep, torch.nn.functional.normalize(mean, dim=0))
    assert Job.open(aligned).stage("encode")["params"]["identity"] == run.identity.value
    torch.testing.assert_close(lat.z_face, run.weights.model.fuse(lat.z_id_rep.expand(len(lat.z_lnd), -1),
                                                                  lat.z_lnd).float())
    recon = crops_of(aligned, ed.edit_job(aligned, [], run).name)
    zero = crops_of(aligned, ed.edit_job(aligned, [("Young", 0.0)], run).name)
    assert recon.keys() == zero.keys() and all(np.array_equal(recon[k], zero[k]) for k in recon)
    # a nonzero edit is DVA's rule on the clip identity: it ends on the unit sphere
    cls = run.weights.ws.classifier
    z = ed.edited_identity(lat.z_id_rep, [("Young", 0.5)], cls)
    expected = edit_identity(lat.z_id_rep[None], edit_direction(cls.weight[cls.names.index("Young")]), 0.5,
                             cls.conds_mean, cls.conds_std)[0]
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z.norm(), torch.tensor(1.0))


def test_a_set_tuned_from_a_dva_set_takes_s3edits_rules(dva_rules_weights, tmp_path):
    start = load_weight_set(dva_rules_weights)
    out = write_output(tmp_path / "tuned", start, start.model, run_source(None, "dva", TrainConfig(steps=1), None, None, []),
                       None, None)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert {k: config[k] for k in S3EDIT_RULES} == S3EDIT_RULES
