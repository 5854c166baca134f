"""The edit stage: DVA's rule, scale 0 = reconstruction, resume/skip, the CLI on a job
and end to end on a video (align -> encode -> edit -> paste), and its errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from s3edit.errors import InputError
from s3edit.job import EDIT_FILE, Job
from s3edit.model import ddim
from s3edit.model.attributes import edited_identity
from s3edit.model.frames import to_uint8
from s3edit.pipeline import edit as ed
from s3edit.pipeline import encode as enc
from s3edit.pipeline.options import run_options
from s3edit.pipeline.score_nets import attribute_logits
from s3edit.s3 import routing
from s3edit.video.io import probe
from s3edit.weights.load import load_weights
from s3edit.weights.weightset import load_weight_set


def run_of(job_root: Path, **options) -> "RunOptions":  # noqa: F821
    """The run options an edit of this job resolves by default (its weights and steps), on the CPU."""
    return run_options(job=Job.open(job_root), device="cpu", **options)


def crops_of(job_root: Path, name: str) -> dict[str, np.ndarray]:
    folder = job_root / "edits" / name / "crops"
    return {p.name: cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))}


# --- the rule ---------------------------------------------------------------------------


def test_parse_attributes():
    assert ed.parse_attributes(["Eyeglasses"], 0.6) == [("Eyeglasses", 0.6)]
    assert ed.parse_attributes(["Eyeglasses=0.6", "Smiling=-0.3", "Young"]) == [
        ("Eyeglasses", 0.6), ("Smiling", -0.3), ("Young", ed.DEFAULT_SCALE)]
    with pytest.raises(InputError, match="the scale after '=' must be a number"):
        ed.parse_attributes(["Eyeglasses=lots"])
    with pytest.raises(InputError, match="given twice"):
        ed.parse_attributes(["Smiling=0.1", "smiling=0.2"])


def test_edit_name():
    assert ed.edit_name([("Eyeglasses", 0.6)], 100) == "Eyeglasses+0.6__s100"
    assert ed.edit_name([("Smiling", 0.3), ("Eyeglasses", -0.6)], 20) == "Eyeglasses-0.6_Smiling+0.3__s20"
    assert ed.edit_name([], 100) == "recon__s100"
    # --region whole is named only where it changes something: an attribute with a region
    assert ed.edit_name([("Eyeglasses", 0.6)], 100, "whole") == "Eyeglasses+0.6__s100__whole"
    assert ed.edit_name([("Smiling", 0.3)], 100, "whole") == "Smiling+0.3__s100__whole"
    assert ed.edit_name([("Young", 0.3)], 100, "whole") == "Young+0.3__s100"
    assert ed.edit_name([("Eyeglasses", 0.6), ("Young", 0.3)], 100, "whole") == "Eyeglasses+0.6_Young+0.3__s100"
    assert ed.edit_name([("Eyeglasses", 0.0)], 100, "whole") == "Eyeglasses+0__s100"


def test_edited_identity_is_dvas_rule(small_weights):
    cls = load_weight_set(small_weights).classifier
    D = cls.weight.shape[1]
    z = torch.nn.functional.normalize(torch.randn(D), dim=0)
    # one attribute: exactly DVA's script, l2norm(denorm(norm(z) + s·√D·normalize(W[a])))
    w = cls.weight[cls.names.index("Eyeglasses")]
    expected = (z - cls.conds_mean[0]) / cls.conds_std[0] + 0.6 * math.sqrt(D) * w / w.norm()
    expected = torch.nn.functional.normalize(expected * cls.conds_std[0] + cls.conds_mean[0], dim=0)
    torch.testing.assert_close(edited_identity(z, [("Eyeglasses", 0.6)], cls), expected)
    # the edit raises the attribute's logit; a negative scale lowers it
    up = edited_identity(z, [("Eyeglasses", 0.6)], cls)
    down = edited_identity(z, [("Eyeglasses", -0.6)], cls)
    logit = lambda v: float(attribute_logits(cls, v[None])[0, cls.names.index("Eyeglasses")])  # noqa: E731
    assert logit(down) < logit(z) < logit(up)
    # several attributes: their steps add before the one l2norm; order does not matter
    a = edited_identity(z, [("Eyeglasses", 0.6), ("Smiling", 0.3)], cls)
    b = edited_identity(z, [("Smiling", 0.3), ("Eyeglasses", 0.6)], cls)
    torch.testing.assert_close(a, b)
    # scale 0 is no edit at all, bit for bit
    assert edited_identity(z, [("Eyeglasses", 0.0)], cls) is z


def test_unknown_attribute_lists_the_closest_names(small_weights):
    cls = load_weight_set(small_weights).classifier
    with pytest.raises(InputError, match=r"unknown attribute 'Eyeglass' \(closest: Eyeglasses"):
        ed.resolve_attributes([("Eyeglass", 0.3)], cls, "tiny")
    assert ed.resolve_attributes([("eyeglasses", 0.3)], cls, "tiny") == [("Eyeglasses", 0.3)]


def test_untuned_cluster_transforms_change_nothing(small_weights):
    """With S3 routing, an untuned T_k adds exactly 0: DVA's edit (docs/s3editor.md)."""
    ws = load_weight_set(small_weights)
    clusters = routing.cluster_attributes(routing.attribute_embeddings(ws.classifier.weight), ws.classifier.names)
    D = ws.config.id_dim
    router = ed.Router(clusters, routing.ClusterTransforms(clusters.k, D, 102, ws.config.face_dim))
    z, lnd = torch.nn.functional.normalize(torch.randn(D), dim=0), torch.rand(3, 102)
    cluster = router.cluster([("Smiling", 0.1), ("Eyeglasses", -0.6)])
    assert cluster == clusters.route_name("Eyeglasses")
    with torch.no_grad():
        torch.testing.assert_close(ed.face_codes(ws.model, z, lnd, router, cluster),
                                   ed.face_codes(ws.model, z, lnd, None, None), rtol=0, atol=0)


# --- the stage ---------------------------------------------------------------------------


def test_scale_zero_is_the_plain_reconstruction(encoded, small_weights, tiny):
    """fp32 on every CPU, so that the stage's decode is compared with ``ddim_decode``'s to
    the bit (bf16 rounds differently per batch layout; tests/pipeline/test_precision.py)."""
    run = run_of(encoded, precision="fp32")
    recon = ed.edit_job(encoded, [], run)
    zero = ed.edit_job(encoded, [("Eyeglasses", 0.0)], run)
    edited = ed.edit_job(encoded, [("Eyeglasses", 0.6)], run, region="whole")
    assert recon.name == f"recon__s{tiny.steps}" and zero.name == f"Eyeglasses+0__s{tiny.steps}"
    a, b, c = (crops_of(encoded, r.name) for r in (recon, zero, edited))
    assert len(a) == recon.frames == len(Job.open(encoded).aligned_frames().indices)
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert next(iter(a.values())).shape == (tiny.crop_size, tiny.crop_size, 3)  # back at the align size
    # the reconstruction decodes under the encode stage's z_face: equal tensors
    lat = enc.load_latents(Job.open(encoded))
    lw = load_weights(small_weights, torch.device("cpu"))
    index, x_T = next(enc.iter_x_T(lat))
    z_face = lat.z_face[lat.rows(index)]
    z_zero = edited_identity(lat.z_id_rep, [("Eyeglasses", 0.0)], lw.ws.classifier)
    assert torch.equal(z_zero, lat.z_id_rep)
    out = ddim.ddim_decode(lw.model, x_T, z_face, tiny.steps)
    assert np.array_equal(to_uint8(out, tiny.crop_size)[0][..., ::-1], a[f"{int(index[0]):06d}.png"])
    record = json.loads((recon.folder / EDIT_FILE).read_text())
    assert record["done"] and record["params"]["steps"] == tiny.steps


def test_an_eyeglasses_edit_changes_only_the_eyes_unless_the_whole_face_is_asked_for(encoded, tiny):
    from s3edit.face.mask import REGION_FEATHER, attribute_region

    job = Job.open(encoded)
    recon = crops_of(encoded, ed.edit_job(encoded, [], run_of(encoded)).name)
    eyes_run = ed.edit_job(encoded, [("Eyeglasses", 4.0)], run_of(encoded))  # the random model's edits are faint
    whole_run = ed.edit_job(encoded, [("Eyeglasses", 4.0)], run_of(encoded), region="whole")
    assert whole_run.name == eyes_run.name + "__whole"
    assert json.loads((eyes_run.folder / EDIT_FILE).read_text())["params"]["region"] == {
        "edit_start": ed.CONFINED_EDIT_START, "outside": "straight_path",
        "areas": {"Eyeglasses": {"points": [36, 48], "pad": [0.75, 0.4], "lenses": [0.33, 0.17]}},
        "feather": REGION_FEATHER}
    assert json.loads((whole_run.folder / EDIT_FILE).read_text())["params"]["region"] == "whole"
    whole = crops_of(encoded, whole_run.name)
    assert not (eyes_run.folder / "crops").exists()  # a confined edit is stored as its change
    change_of = job.changes(eyes_run.name)
    frames = job.aligned_frames()
    boxes = attribute_region("Eyeglasses", torch.from_numpy(frames.crop_landmarks), tiny.crop_size).numpy()
    # the model decodes at 32 px: its feathered box, resized to the 64 px crop, reaches ~8 px further
    near = np.stack([cv2.dilate(b.astype(np.uint8), np.ones((21, 21), np.uint8)) for b in boxes]).astype(bool)
    for i, box, around in zip(frames.indices, boxes, near):
        change = change_of(int(i))  # (64, 64, 3), levels of 255
        assert change.shape == (tiny.crop_size, tiny.crop_size, 3)
        assert not change[~around].any()  # nothing changes outside the eyes' region
        assert np.abs(change[box]).mean() > 0.5  # the random tiny model draws something there
        name = f"{int(i):06d}.png"
        assert np.abs(whole[name].astype(int) - recon[name])[~around].mean() > 2  # whole: the rest changes too


def test_cli_edit_unknown_region(cli, encoded):
    result = cli("edit", str(encoded), "--attr", "Eyeglasses", "--region", "mouth")
    assert result.exit_code == 2 and "Invalid value for '--region'" in result.stderr
    with pytest.raises(InputError, match="unknown region 'mouth'; choose one of auto, whole"):
        ed.edit_job(encoded, [("Eyeglasses", 0.6)], run_of(encoded), region="mouth")


def test_edit_skips_when_done_and_resumes_missing_crops(encoded):
    first = ed.edit_job(encoded, [("Young", 0.5)], run_of(encoded))
    assert first.decoded == first.frames
    crops = sorted((first.folder / "crops").glob("*.png"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in crops}
    again = ed.edit_job(encoded, [("Young", 0.5)], run_of(encoded))
    assert again.decoded == 0
    crops[3].unlink()  # as if interrupted before this crop
    crops[5].unlink()
    resumed = ed.edit_job(encoded, [("Young", 0.5)], run_of(encoded))
    assert resumed.decoded == 2
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in crops if p.exists() and p not in (crops[3], crops[5]))


def test_edit_of_an_aligned_job_encodes_first(aligned, small_weights):
    result = ed.edit_job(aligned, [("Young", -0.4)], run_options(small_weights, steps=2, device="cpu"))
    job = Job.open(aligned)
    assert job.is_done("encode") and job.stage("encode")["params"]["steps"] == 2
    assert result.name == "Young-0.4__s2" and result.decoded == result.frames


def test_cli_edit_job(cli, encoded, tiny, tmp_path):
    result = cli("edit", str(encoded), "--attr", "Eyeglasses=0.6", "--attr", "Smiling=0.3",
                 "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["edit"] == f"Eyeglasses+0.6_Smiling+0.3__s{tiny.steps}" and summary["video"] is None
    result = cli("edit", str(encoded), "--attr", "Eyeglasses", "--scale", "-0.6", "--device", "cpu",
                 "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out.mp4").is_file() and (encoded / "edits" / f"Eyeglasses-0.6__s{tiny.steps}").is_dir()


@pytest.mark.parametrize("args, code, message", [
    (["--attr", "Eyeglass"], 1, "unknown attribute 'Eyeglass' (closest: Eyeglasses"),
    (["--attr", "Smiling=big"], 1, "the scale after '=' must be a number"),
    (["--attr", "Smiling", "--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
    (["--attr", "Smiling", "--device", "tpu"], 2, "Invalid value for '--device'"),
    pytest.param(["--attr", "Smiling", "--device", "cuda"], 1, "cuda was asked for",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_cli_edit_errors(cli, encoded, args, code, message):
    result = cli("edit", str(encoded), *args)
    assert result.exit_code == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_edit_refuses_to_overwrite(cli, encoded, tmp_path):
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"mine")
    result = cli("edit", str(encoded), "--attr", "Smiling", "--device", "cpu", "-o", str(out))
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.stderr
    assert out.read_bytes() == b"mine"


def test_cli_edit_folder_that_is_not_a_job(cli, tmp_path):
    result = cli("edit", str(tmp_path), "--attr", "Smiling")
    assert result.exit_code == 1 and "is not an s3edit job folder" in result.stderr


# --- end to end ------------------------------------------------------------------------


@pytest.mark.slow  # ~70 s of CPU: align, encode and two edits of 50 frames, two pastes, score
def test_edit_video_end_to_end_and_rerun_skips_align_and_encode(cli, example_clip, small_weights, tiny, tmp_path):
    job_dir, out1, out2 = tmp_path / "astro.s3job", tmp_path / "glasses.mp4", tmp_path / "glasses2.mp4"
    args = ["--weights", str(small_weights), "--steps", "3", "--device", "cpu", "--job", str(job_dir)]
    result = cli("edit", str(example_clip), "--attr", "Eyeglasses", "--scale", "0.6", "-o", str(out1),
                 "--size", str(tiny.crop_size), *args)
    assert result.exit_code == 0, result.stderr
    src, dst = probe(example_clip), probe(out1)
    assert dst.n_frames == src.n_frames and dst.has_audio
    assert abs(dst.fps - src.fps) < 1e-6 and (dst.width, dst.height) == (src.width, src.height)
    job = Job.open(job_dir)
    stamps = {s: job.stage(s) for s in ("align", "encode")}
    latents = {p.name: p.stat().st_mtime_ns for p in job.latents_dir.iterdir()}
    result = cli("edit", str(example_clip), "--attr", "Eyeglasses", "--scale", "0.3", "-o", str(out2), *args)
    assert result.exit_code == 0, result.stderr
    job = Job.open(job_dir)
    assert {s: job.stage(s) for s in ("align", "encode")} == stamps
    assert latents == {p.name: p.stat().st_mtime_ns for p in job.latents_dir.iterdir()}
    assert probe(out2).n_frames == src.n_frames
    assert job.has_edit("Eyeglasses+0.3__s3") and job.changed_frames("Eyeglasses+0.3__s3")
    assert job.stage("align")["params"]["size"] == tiny.crop_size
    # score: TACR/NAPR from the weight set's heads for the edit the job pasted, and the
    # weight set's identity encoder as the ID net
    result = cli("score", str(job_dir), str(out2), "--id-net", "arcface", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["attribute"] == "Eyeglasses" and 0 <= report["tacr"] <= 1 and 0 <= report["napr"] <= 1
    assert "z_id of weight set 'tiny-test-0'" in report["id_net"]
    assert 0 < report["id_preserve"] <= 1.0001
