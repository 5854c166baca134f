"""``s3edit tune`` on the example clip with a tiny model: the S3Editor objective falls,
the new weight set ends with exactly Q zero groups and records them, the ablation
switches and the dva objective, and every user-facing error.

The model is tiny-32 with dlib's 128-d identity net (torch port) and the align stage's
landmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3edit.weights.weightset import S3_FILE, load_weight_set, random_weight_set, save_weight_set
from s3edit.s3.dhspg import num_sparse_groups
from s3edit.s3.selftrain import load_s3, zero_group_names

ID_DIM = 128
CROP_SIZE = 64
FRAMES = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """tiny-32, dlib's 128-d identity net, landmarks from align, random classifier over
    CelebA's 40 attributes."""
    return random_weight_set(tmp_path_factory.mktemp("w") / "tiny", "tiny-32-dlib", name="tiny")


@pytest.fixture(scope="module")
def job(tmp_path_factory, example_clip) -> Path:
    from s3edit.pipeline.align import align_video

    return align_video(example_clip, tmp_path_factory.mktemp("jobs") / "astronaut.s3job", size=CROP_SIZE,
                       max_frames=FRAMES).root


def tune_json(cli, *args: str) -> dict:
    result = cli("tune", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_toy_tune_lowers_the_objective_and_ends_with_exactly_Q_zero_groups(cli, job, weights, tmp_path):
    out = tmp_path / "tuned"
    summary = tune_json(cli, str(job), "--from", str(weights), "-o", str(out), "--steps", "12",
                        "--batch-size", "4", "--lr", "2e-3")
    assert summary["frames"] == FRAMES and summary["objective"] == "s3"
    assert summary["after"]["loss"] < summary["before"]["loss"]
    ws = load_weight_set(out)
    rec = ws.meta["s3"]
    assert rec["K"] == 5 and rec["q"] == 0.1 and rec["Q"] == num_sparse_groups(0.1, 35) == 3
    state = load_s3(ws)
    assert sorted(zero_group_names(state.transforms)) == sorted(rec["groups_zeroed"])
    assert len(rec["groups_zeroed"]) == 3
    assert (out / S3_FILE).is_file()
    assert ws.meta["source"]["objective"] == "s3" and ws.meta["source"]["frames"] == FRAMES
    listed = cli("weights", "list")  # the registry lists imported sets only; describe_s3 is unit-tested
    assert listed.exit_code == 0


def test_report_shows_losses_and_groups_per_cluster(cli, job, weights, tmp_path):
    result = cli("tune", str(job), "--from", str(weights), "-o", str(tmp_path / "t"), "--steps", "3",
                 "--batch-size", "2", "--clusters", "2", "--sparsity", "0.3")
    assert result.exit_code == 0, result.output
    assert "K=2 q=0.3: 4 of 14 landmark groups zeroed" in result.stdout  # ⌊0.3 · 14⌋ = 4
    assert "T0 (" in result.stdout and "T1 (" in result.stdout
    for term in ("loss", "gen", "id", "faith"):
        assert f"    {term} " in result.stdout


def test_ablation_switches(cli, job, weights, tmp_path):
    base = [str(job), "--from", str(weights), "--steps", "2", "--batch-size", "2"]
    s = tune_json(cli, *base, "-o", str(tmp_path / "a"), "--no-routing")["s3"]
    assert s["K"] == 1 and s["Q"] == 0 and s["groups_zeroed"] == []  # ⌊0.1 · 7⌋ = 0
    s = tune_json(cli, *base, "-o", str(tmp_path / "b"), "--no-self-train", "--sparsity", "0")["s3"]
    assert s["self_train"] is False and s["groups_zeroed"] == []
    tuned = load_s3(load_weight_set(tmp_path / "b"))
    assert all(not t[2].weight.any() for t in tuned.transforms.transforms)  # no gradient: still 0
    summary = tune_json(cli, *base, "-o", str(tmp_path / "c"), "--objective", "dva")
    assert summary["s3"] is None and load_weight_set(tmp_path / "c").meta["s3"] is None


def test_no_routing_zeroes_no_group_so_it_trains_as_q_0(cli, job, weights, tmp_path):
    """--no-routing at the default q = 0.1 has ⌊0.1 · 7⌋ = 0 groups to zero, so DHSPG runs
    Adam throughout: the same weights as --no-routing --sparsity 0 (benchmarks/ablation.py
    runs the two as one row)."""
    base = [str(job), "--from", str(weights), "--steps", "3", "--batch-size", "2"]
    tune_json(cli, *base, "-o", str(tmp_path / "q01"), "--no-routing")
    tune_json(cli, *base, "-o", str(tmp_path / "q0"), "--no-routing", "--sparsity", "0")
    a, b = load_weight_set(tmp_path / "q01"), load_weight_set(tmp_path / "q0")
    ta, tb = a.model.state_dict(), b.model.state_dict()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    sa, sb = load_s3(a).transforms.state_dict(), load_s3(b).transforms.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(sa[k].any() for k in sa)  # self-training moved the transform


def test_no_self_train_trains_the_baselines_weights_whatever_k_and_q(cli, job, weights, tmp_path):
    """Without self-training the T_k get no gradient and stay 0, and the network's steps
    are Adam's whatever K and q: --no-self-train at K = 5, q = 0.1 writes the weights of
    the baseline (--no-self-train --no-routing --sparsity 0), so benchmarks/ablation.py
    runs the two as one row."""
    base = [str(job), "--from", str(weights), "--steps", "12", "--batch-size", "2", "--no-self-train"]
    tune_json(cli, *base, "-o", str(tmp_path / "k5"))
    tune_json(cli, *base, "-o", str(tmp_path / "k1"), "--no-routing", "--sparsity", "0")
    a, b = load_weight_set(tmp_path / "k5"), load_weight_set(tmp_path / "k1")
    assert a.meta["s3"]["Q"] == 3 and len(a.meta["s3"]["groups_zeroed"]) == 3  # the sparse phase was reached
    ta, tb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert all(not t[2].weight.any() for t in load_s3(a).transforms.transforms)  # T_k(.) = 0


def test_rerun_resumes_from_the_checkpoint(cli, job, weights, tmp_path):
    out = tmp_path / "r"
    args = [str(job), "--from", str(weights), "-o", str(out), "--steps", "2", "--batch-size", "2"]
    first = tune_json(cli, *args)
    again = tune_json(cli, *args, "--overwrite")  # every step is in the checkpoint: none rerun
    assert again["first"] == {} and again["after"] == first["after"]
    report = cli("tune", *args, "--overwrite")
    assert report.exit_code == 0 and "every step was already in the checkpoint" in report.stdout
    assert "training loss" not in report.stdout


def test_the_same_command_from_retrained_weights_trains_afresh(cli, job, tmp_path):
    """--from a set that was retrained in place since the last run: the old run's
    checkpoint is not taken for this one (it would hand back the old weights' result)."""
    base, out = tmp_path / "base", tmp_path / "r"
    args = [str(job), "--from", str(base), "-o", str(out), "--steps", "2", "--batch-size", "2",
            "--objective", "dva"]
    random_weight_set(base, "tiny-32-dlib", seed=0, name="base")
    first = tune_json(cli, *args)
    random_weight_set(base, "tiny-32-dlib", seed=1, name="base", overwrite=True)
    again = tune_json(cli, *args, "--overwrite")
    assert again["first"] != {} and again["first"] != first["first"]  # two steps ran, from other weights


def test_another_runs_checkpoint_is_kept_unless_overwrite_says_replace_it(cli, job, weights, tmp_path):
    """An interrupted (here: finished, its set since deleted) run's checkpoint is not
    thrown away by a run of other settings to the same output: that run is refused with
    a sentence, and --overwrite starts it in the other's place."""
    out = tmp_path / "r"
    args = [str(job), "--from", str(weights), "-o", str(out), "--steps", "2", "--batch-size", "2",
            "--objective", "dva"]
    tune_json(cli, *args)
    shutil.rmtree(out)
    held = {f.name: f.read_bytes() for f in (tmp_path / "r.tune").iterdir()}
    result = cli("tune", *args, "--lr", "1e-3")
    assert result.exit_code == 1 and "holds the checkpoint of another run (step 2" in result.stderr, result.output
    assert "Traceback" not in result.output and not out.exists()
    assert {f.name: f.read_bytes() for f in (tmp_path / "r.tune").iterdir()} == held
    assert tune_json(cli, *args, "--lr", "1e-3", "--overwrite")["first"] != {}


def test_a_preset_starts_from_the_weights_its_seed_draws(cli, job, tmp_path):
    args = [str(job), "--preset", "tiny-32-dlib", "--objective", "dva", "--steps", "1", "--batch-size", "2"]
    runs = {name: tune_json(cli, *args, "-o", str(tmp_path / name), "--seed", seed)["first"]
            for name, seed in [("a", "0"), ("b", "0"), ("c", "1")]}
    assert runs["a"] == runs["b"] != runs["c"]


def test_a_larger_steps_trains_a_finished_run_on_and_nothing_else_replaces_it(cli, job, weights, twins, tmp_path):
    """Rerunning a finished run with more --steps continues it from its checkpoint (to the
    weights a run started with those steps reaches) without --overwrite; the same steps
    again, or other settings, leave the set as it was and say why."""
    out, pairs = tmp_path / "longer", str(twins[1])
    args = [str(job), "--pairs", pairs, "--from", str(weights), "--objective", "dva", "-o", str(out),
            "--batch-size", "2", "--pair-batch", "2"]
    tune_json(cli, *args, "--steps", "2")
    longer = tune_json(cli, *args, "--steps", "3")
    assert load_weight_set(out).meta["source"]["train"]["steps"] == 3
    at_once = tune_json(cli, *[a if a != str(out) else str(tmp_path / "at-once") for a in args], "--steps", "3")
    assert longer["first"] == longer["last"] == at_once["last"] != at_once["first"]  # only the third step ran
    a, b = load_weight_set(out).model.state_dict(), load_weight_set(tmp_path / "at-once").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    written = (out / "model.safetensors").read_bytes()
    for extra, message in [(["--steps", "3"], "already holds 3 steps of this run; ask for more --steps"),
                           (["--steps", "2"], "already holds 3 steps of this run; ask for more --steps"),
                           (["--steps", "4", "--lr", "1e-3"], "already exists; pass --overwrite to replace it."),
                           (["--steps", "4", "--pair-weight", "2"], "already exists; pass --overwrite to replace it.")]:
        result = cli("tune", *args, *extra)
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert "Traceback" not in result.output
    no_pairs = [a for a in args if a not in ("--pairs", pairs)]
    result = cli("tune", *no_pairs, "--steps", "4")  # the same run but for its pairs: another run
    assert result.exit_code == 1 and "already exists; pass --overwrite to replace it." in result.stderr, result.output
    assert (out / "model.safetensors").read_bytes() == written


def test_precision_is_recorded_and_a_run_goes_on_under_the_other(cli, job, weights, twins, tmp_path):
    """--precision bf16 trains in bf16 autocast and says so in the set's record; the same
    run rerun with more --steps under fp32 trains on from its checkpoint (the precision
    decides how fast the steps run, not what they train)."""
    out = tmp_path / "mixed"
    args = [str(job), "--pairs", str(twins[1]), "--from", str(weights), "--objective", "dva", "-o", str(out),
            "--batch-size", "2", "--pair-batch", "2"]
    result = cli("tune", *args, "--steps", "2", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert "precision: bf16 autocast" in result.stderr
    assert load_weight_set(out).meta["source"]["train"]["precision"] == "bf16"
    longer = tune_json(cli, *args, "--steps", "3", "--precision", "fp32")
    assert longer["first"] == longer["last"]  # one step, the third
    train = load_weight_set(out).meta["source"]["train"]
    assert train["steps"] == 3 and train["precision"] == "fp32"


@pytest.mark.parametrize("args, code, message", [
    (["--objective", "gan"], 2, "Invalid value for '--objective'"),
    (["--preset", "nope"], 2, "Invalid value for '--preset'"),
    (["--from", "W", "--preset", "tiny-32"], 1, "give exactly one of --from WEIGHTS"),
    (["--from", "W", "--train", "transforms", "--no-self-train"], 1, "trains nothing"),
    (["--from", "W", "--precision", "fp16"], 1, "--precision fp16 needs a CUDA GPU"),
    (["--from", "W", "--precision", "fp8"], 2, "Invalid value for '--precision'"),
])
def test_errors(cli, job, weights, tmp_path, args, code, message):
    args = [str(weights) if a == "W" else a for a in args]
    result = cli("tune", str(job), "-o", str(tmp_path / "x"), *args)
    assert result.exit_code == code and message in result.stderr
    assert "Traceback" not in result.output


def test_s3_needs_a_classifier(cli, job, tmp_path):
    result = cli("tune", str(job), "-o", str(tmp_path / "x"), "--preset", "small-64")
    assert result.exit_code == 1
    assert "preset small-64 has no attribute classifier, which the s3 objective needs" in result.stderr


def test_existing_output_and_bad_folder(cli, job, weights, tmp_path):
    (tmp_path / "exists").mkdir()
    result = cli("tune", str(job), "--from", str(weights), "-o", str(tmp_path / "exists"))
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.stderr
    result = cli("tune", str(tmp_path), "--from", str(weights), "-o", str(tmp_path / "y"))
    assert result.exit_code == 1 and "is a folder but not an s3edit job" in result.stderr


# --- paired edits (--pairs) -------------------------------------------------------------


@pytest.fixture(scope="module")
def twins(job, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of ``job`` with glasses drawn on every crop from its landmarks, and the
    pairs file that pairs frame i of ``job`` with frame i of the copy."""
    from s3edit.job import Job
    from s3edit.portraits.glasses import CLASSIC, draw_glasses
    from s3edit.train.pairs import write_pairs

    root = tmp_path_factory.mktemp("twins")
    twin = shutil.copytree(job, root / "glasses.s3job")
    twin_job = Job.open(twin)
    frames = twin_job.aligned_frames()
    for i, lm in zip(frames.indices, frames.crop_landmarks):
        twin_job.write_crop(int(i), draw_glasses(twin_job.read_crops([i])[0], lm, CLASSIC))
    pairs = write_pairs(root / "pairs.json", "Eyeglasses", job, twin, np.stack([frames.indices] * 2, axis=1))
    return twin, pairs


def test_pairs_add_the_paired_term_and_their_job(cli, job, weights, twins, tmp_path):
    twin, pairs = twins
    out = tmp_path / "paired"
    summary = tune_json(cli, str(job), "--pairs", str(pairs), "--from", str(weights), "--objective", "dva",
                        "-o", str(out), "--steps", "3", "--batch-size", "2", "--pair-batch", "4")
    assert summary["frames"] == 2 * FRAMES  # the twin job was loaded for the pair term
    assert "pair" in summary["first"] and "pair" in summary["last"]
    pairs_record = load_weight_set(out).meta["source"]["pairs"]
    assert pairs_record["names"] == ["Eyeglasses"] and pairs_record["pairs"] == FRAMES
    assert pairs_record["batch"] == 4 and pairs_record["sources"] == [str(pairs)]
    assert pairs_record["plain_frames"] == FRAMES  # DVA's loss: the inputs' frames only
    assert "keep" in summary["first"] and (pairs_record["keep"], pairs_record["code_noise"]) == (1.0, 0.3)
    off = tune_json(cli, str(job), "--pairs", str(pairs), "--from", str(weights), "--objective", "dva",
                    "-o", str(tmp_path / "off"), "--steps", "1", "--batch-size", "2", "--keep-weight", "0",
                    "--code-noise", "1.0")
    assert "keep" not in off["first"] and "pair" in off["first"]
    off_record = load_weight_set(tmp_path / "off").meta["source"]["pairs"]
    assert (off_record["keep"], off_record["code_noise"]) == (0.0, 1.0)
    x0 = tune_json(cli, str(job), "--pairs", str(pairs), "--from", str(weights), "--objective", "dva",
                   "-o", str(tmp_path / "x0"), "--steps", "1", "--batch-size", "2", "--keep-target", "unedited",
                   "--keep-random", "0.5", "--pair-space", "x0", "--pair-target", "change",
                   "--pair-gain", "2", "--pair-loss", "l2")
    assert "keep" in x0["first"]
    x0_record = load_weight_set(tmp_path / "x0").meta["source"]["pairs"]
    assert (x0_record["keep_target"], x0_record["keep_random"], x0_record["space"], x0_record["target"]) == \
        ("unedited", 0.5, "x0", "change")
    assert x0_record["gain"] == 2.0 and x0_record["loss"] == "l2"
    assert "keep_random" not in pairs_record  # recorded only when used: older checkpoints still resume
    assert "space" not in pairs_record and "target" not in pairs_record and "gain" not in pairs_record
    assert "loss" not in pairs_record
    both = tune_json(cli, str(job), str(twin), "--pairs", str(pairs), "--from", str(weights), "--objective", "dva",
                     "-o", str(tmp_path / "both"), "--steps", "1", "--batch-size", "2")
    assert load_weight_set(tmp_path / "both").meta["source"]["pairs"]["plain_frames"] is None  # both are inputs
    assert both["frames"] == 2 * FRAMES


def test_pairs_join_s3editors_objective_through_the_routed_transforms(cli, job, weights, twins, tmp_path):
    _, pairs = twins
    out = tmp_path / "s3-paired"
    summary = tune_json(cli, str(job), "--pairs", str(pairs), "--from", str(weights), "-o", str(out),
                        "--steps", "2", "--batch-size", "2", "--pair-batch", "2", "--clusters", "2")
    assert {"pair", "keep", "id", "faith"} <= set(summary["first"])
    tuned = load_weight_set(out)
    assert tuned.meta["source"]["objective"] == "s3" and tuned.meta["source"]["pairs"]["names"] == ["Eyeglasses"]
    assert tuned.meta["s3"]["K"] == 2
    assert any(bool(v.any()) for k, v in tuned.s3_tensors.items() if k.endswith(".2.weight"))  # T_k learnt
    alone = tune_json(cli, str(job), "--pairs", str(pairs), "--from", str(weights), "-o", str(tmp_path / "alone"),
                      "--steps", "2", "--batch-size", "2", "--pair-batch", "2", "--train", "transforms",
                      "--no-self-train")  # the pair and keep rows train the transforms, the network as it was
    assert {"pair", "keep"} <= set(alone["first"]) and "id" not in alone["first"]
    trained, start = load_weight_set(tmp_path / "alone"), load_weight_set(weights)
    assert all(torch.equal(v, start.model.state_dict()[k]) for k, v in trained.model.state_dict().items())
    assert any(bool(v.any()) for k, v in trained.s3_tensors.items() if k.endswith(".2.weight"))


@pytest.mark.parametrize("edit, args, message", [
    ({"attribute": "Sunglasses"}, ["--objective", "dva"], "pairs attribute 'Sunglasses', which the weight set has no head"),
    ({"with": "nowhere"}, ["--objective", "dva"], "which is not an s3edit job"),
    (None, ["--objective", "dva", "--keep-target", "x0"], "Invalid value for '--keep-target'"),
    (None, ["--objective", "dva", "--keep-random", "1.5"], "Invalid value for '--keep-random'"),
    (None, ["--objective", "dva", "--pair-space", "eps"], "Invalid value for '--pair-space'"),
    (None, ["--objective", "dva", "--pair-target", "delta"], "Invalid value for '--pair-target'"),
    (None, ["--objective", "dva", "--pair-gain", "0"], "--pair-gain multiplies the fusion layer's response"),
    (None, ["--objective", "dva", "--pair-loss", "huber"], "Invalid value for '--pair-loss'"),
    (None, ["--train", "transforms", "--pair-gain", "2"], "--pair-gain changes the network's fusion layer"),
])
def test_pairs_errors(cli, job, weights, twins, tmp_path, edit, args, message):
    pairs = twins[1]
    if edit is not None:
        meta = json.loads(pairs.read_text()) | edit
        pairs = tmp_path / "pairs.json"
        pairs.write_text(json.dumps(meta | {"without": str(job), "with": str(twins[0]) if "with" not in edit
                                            else str(tmp_path / edit["with"])}))
    result = cli("tune", str(job), "--pairs", str(pairs), "--from", str(weights), "-o", str(tmp_path / "x"),
                 "--steps", "1", "--batch-size", "2", *args)
    assert result.exit_code == (2 if "Invalid value" in message else 1) and message in result.stderr, result.output
    assert "Traceback" not in result.output


def test_pairs_need_attribute_heads(cli, job, twins, tmp_path):
    result = cli("tune", str(job), "--pairs", str(twins[1]), "--preset", "tiny-32-dlib", "--objective", "dva",
                 "-o", str(tmp_path / "x"), "--steps", "1", "--batch-size", "2")
    assert result.exit_code == 1 and "--pairs needs a weight set with attribute heads" in result.stderr


# --- edit through the tuned model (docs/s3editor.md: routing, sparse T_k) -------------------


def with_s3(src: Path, dst: Path, tuned_from: Path | None = None, last: str = "keep") -> Path:
    """A weight set with ``src``'s DVA and the S3 state of ``tuned_from``, or untuned
    (fresh zero-output T_k) when None; ``last``: "zero"/"random" T_k's last layers."""
    from s3edit.s3.selftrain import S3Config, routing_state, s3_record, s3_tensors

    ws = load_weight_set(src)
    if tuned_from is None:
        clusters, transforms = routing_state(ws, S3Config())
    else:
        state = load_s3(load_weight_set(tuned_from))
        clusters, transforms = state.clusters, state.transforms
    with torch.no_grad():
        for t in transforms.transforms:
            if last == "zero":
                t[2].weight.zero_()
                t[2].bias.zero_()
            elif last == "random":
                torch.nn.init.normal_(t[2].weight, std=0.1)
    record = s3_record(S3Config(), clusters, transforms, zero_group_names(transforms))
    return save_weight_set(dst, ws.model, ws.config, ws.classifier, {"name": dst.name, "s3": record},
                           s3_tensors=s3_tensors(transforms))


def plain(src: Path, dst: Path) -> Path:
    """``src``'s DVA and classifier, no S3 state ("s3": null)."""
    ws = load_weight_set(src)
    return save_weight_set(dst, ws.model, ws.config, ws.classifier, {"name": dst.name})


def edited_crops(job: Path, weights: Path, work: Path, attr: str) -> np.ndarray:
    """Edit a copy of ``job`` with ``weights`` (3 DDIM steps): (V, H, W, 3) uint8."""
    import cv2

    from s3edit.pipeline.edit import edit_job
    from s3edit.pipeline.options import run_options

    copy = work / f"{weights.name}.s3job"
    shutil.copytree(job, copy)
    result = edit_job(copy, [(attr, 0.6)], run_options(weights, steps=3, batch_size=4), region="whole")
    files = sorted((result.folder / "crops").glob("*.png"))
    assert len(files) == FRAMES
    return np.stack([cv2.imread(str(f)) for f in files])


def test_untuned_transforms_edit_exactly_like_plain_dva(job, weights, tmp_path):
    untuned = with_s3(weights, tmp_path / "untuned")
    assert load_weight_set(untuned).meta["s3"]["K"] == 5
    a = edited_crops(job, weights, tmp_path, "Eyeglasses")
    b = edited_crops(job, untuned, tmp_path, "Eyeglasses")
    assert np.array_equal(a, b)


def test_tuned_edit_differs_from_its_dva_only_through_T_k(cli, job, weights, tmp_path):
    tuned = tmp_path / "tuned"
    tune_json(cli, str(job), "--from", str(weights), "-o", str(tuned), "--steps", "3", "--batch-size", "4",
              "--lr", "2e-3", "--train", "transforms")
    state = load_s3(load_weight_set(tuned))
    trained = [k for k in range(state.clusters.k) if state.transforms.transforms[k][2].weight.any()]
    assert trained, "no cluster drew a pseudo-edit"
    attr = state.clusters.members(trained[0])[0]  # routed to a trained T_k
    base = plain(tuned, tmp_path / "dva-only")
    zeroed = with_s3(tuned, tmp_path / "t-zero", tuned_from=tuned, last="zero")
    dva_edit = edited_crops(job, base, tmp_path, attr)
    assert np.array_equal(edited_crops(job, zeroed, tmp_path, attr), dva_edit)  # T_k = 0: DVA's edit
    assert not np.array_equal(edited_crops(job, tuned, tmp_path, attr), dva_edit)  # T_k ≠ 0: differs


def test_face_codes_add_exactly_the_routed_transform(weights, tmp_path):
    from s3edit.pipeline import edit as ed
    from s3edit.weights.load import load_weights

    lw = load_weights(with_s3(weights, tmp_path / "s3", last="random"), torch.device("cpu"))
    router = ed.load_router(lw)
    cluster = router.cluster([("Smiling", 0.2), ("Eyeglasses", -0.7)])  # the strongest attribute
    assert cluster == router.clusters.route_name("Eyeglasses")
    z = F.normalize(torch.randn(lw.ws.config.id_dim), dim=0)
    z_lnd = torch.rand(3, 102)
    with torch.no_grad():
        routed = ed.face_codes(lw.model, z, z_lnd, router, cluster)
        dva = ed.face_codes(lw.model, z, z_lnd, None, None)
        t_k = router.transforms(z.expand(3, -1), z_lnd, cluster)
    assert t_k.abs().max() > 0 and torch.allclose(routed - dva, t_k, atol=1e-6)
    assert ed.load_router(load_weights(weights, torch.device("cpu"))) is None  # "s3": null
