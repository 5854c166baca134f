"""scripts/prepare_faces.py, fit_heads.py, glasses_job.py and smiling_job.py as a user runs them: output,
exit codes and one-line error messages."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


def script_app(name: str) -> typer.Typer:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = typer.Typer()
    app.command()(module.main)
    return app


@pytest.fixture(scope="module")
def run():
    runner = CliRunner()

    def invoke(name: str, *args: str):
        return runner.invoke(script_app(name), list(args), catch_exceptions=False)

    return invoke


def test_prepare_faces_prints_counts_per_source(run, make_folder, tmp_path):
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    result = run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["aligned"] == 2 and report["skipped"] == 1
    assert report["counts"]["web"] == {"aligned": 1, "skipped": 1}
    again = run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q")
    assert again.exit_code == 0
    assert "2 aligned, 1 skipped (3 rows from an earlier run)" in again.stdout


def test_prepare_faces_refuses_an_output_inside_the_repository(run, make_folder, tmp_path):
    root = make_folder(tmp_path / "photos")
    result = run("prepare_faces", str(root), "-o", str(ROOT / "aligned-here"), "-q")
    assert result.exit_code == 1
    assert "is inside the repository; the aligned photos must stay out of it" in result.stderr
    assert "Traceback" not in result.output
    assert not (ROOT / "aligned-here").exists()


def test_prepare_faces_missing_folder(run, tmp_path):
    result = run("prepare_faces", str(tmp_path / "none"), "-o", str(tmp_path / "out"), "-q")
    assert result.exit_code == 1
    assert "does not exist; give the folder that holds the photos" in result.stderr


def test_fit_heads_without_a_dataset(run, tmp_path):
    result = run("fit_heads", str(tmp_path), "-o", str(tmp_path / "heads"), "-q")
    assert result.exit_code == 1
    assert "holds no finished aligned portraits; run `python scripts/prepare_faces.py` first" in result.stderr
    assert "Traceback" not in result.output


def test_fit_heads_on_too_few_labels(run, make_folder, tmp_path):
    """Two faces of one source: no head has both classes -> one clear message (this
    runs the identity net on the two crops and their glasses twins)."""
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "64", "-q").exit_code == 0
    result = run("fit_heads", str(out), "-o", str(tmp_path / "heads"), "-q")
    assert result.exit_code == 1
    assert "has no labels of both classes for Eyeglasses, Smiling, Male, Young, Sunglasses" in result.stderr


def test_fit_heads_add_to_refuses_a_set_with_every_head_and_both_targets(run, make_folder, tmp_path):
    from s3edit.model.attributes import Classifier
    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva
    from s3edit.portraits.heads import attach_classifier
    from s3edit.weights.weightset import save_weight_set

    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q").exit_code == 0
    ws = save_weight_set(tmp_path / "set", build_dva(preset("tiny-32-dlib")))
    names = ["Eyeglasses", "Smiling", "Male", "Young", "Sunglasses"]
    D = 128
    attach_classifier(ws, Classifier(torch.randn(5, D), torch.zeros(5), torch.zeros(1, D), torch.ones(1, D), names))
    full = run("fit_heads", str(out), "-o", str(tmp_path / "heads"), "--add-to", str(ws), "-q")
    assert full.exit_code == 1 and "has every head already (Eyeglasses, Smiling, Male, Young, Sunglasses)" in full.stderr
    both = run("fit_heads", str(out), "-o", str(tmp_path / "heads"), "--add-to", str(ws), "--into", str(ws), "-q")
    assert both.exit_code == 1 and "give one" in both.stderr


def test_fit_heads_for_a_set_fits_at_the_sets_crop_size(run, make_folder, tmp_path):
    """Heads that go into a set live in the z_id of the crops its network sees: a 64-px
    dataset's heads for a 32-px set are fitted on z_id at 32 px by default, and a --size
    other than the set's is refused before any work."""
    from safetensors import safe_open

    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva
    from s3edit.weights.weightset import save_weight_set

    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "64", "-q").exit_code == 0
    ws = save_weight_set(tmp_path / "set", build_dva(preset("tiny-32-dlib")))
    wrong = run("fit_heads", str(out), "-o", str(tmp_path / "wrong"), "--into", str(ws), "--size", "64", "-q")
    assert wrong.exit_code == 1
    assert "sees 32-px crops, so its heads must be fitted on z_id at 32 px, not 64" in wrong.stderr
    assert not (tmp_path / "wrong").exists()
    heads = tmp_path / "heads"
    result = run("fit_heads", str(out), "-o", str(heads), "--into", str(ws), "-q")
    assert result.exit_code == 1 and "has no labels of both classes" in result.stderr  # two faces only
    with safe_open(str(heads / "embeddings.safetensors"), framework="numpy") as f:
        assert json.loads(f.metadata()["key"])["size"] == 32


def test_glasses_job_without_a_dataset(run, tmp_path):
    result = run("glasses_job", str(tmp_path))
    assert result.exit_code == 1 and "holds no finished aligned portraits" in result.stderr
    assert "Traceback" not in result.output


def test_glasses_job_styles_and_pairs_file(run, make_folder, tmp_path):
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q").exit_code == 0
    meta = json.loads((out / "dataset.json").read_text())
    meta["items"][0]["source"] = "london"  # a source the glasses twins are drawn for
    (out / "dataset.json").write_text(json.dumps(meta))
    result = run("glasses_job", str(out), "--style", "classic")
    assert result.exit_code == 0, result.output
    assert "1 faces with drawn glasses (classic)" in result.stdout
    assert (out / "classic-glasses-job" / "manifest.json").is_file()
    pairs = json.loads((out / "classic-glasses-job-pairs.json").read_text())
    assert pairs["attribute"] == "Eyeglasses" and pairs["frames"] == [[0, 0]]
    assert pairs["without"] == "job" and pairs["with"] == "classic-glasses-job"
    sun = run("glasses_job", str(out), "--style", "sunglasses")  # the second style: its own attribute
    assert sun.exit_code == 0 and (out / "sunglasses-job" / "manifest.json").is_file(), sun.output
    assert json.loads((out / "sunglasses-job-pairs.json").read_text())["attribute"] == "Sunglasses"
    bad = run("glasses_job", str(out), "--style", "bold")
    assert bad.exit_code == 1 and "unknown glasses style 'bold'; one of random, classic, sunglasses." in bad.stderr
    named = run("glasses_job", str(out), "--style", "classic", "--source", "web", "--name", "web-job")
    assert named.exit_code == 0 and (out / "web-job-pairs.json").is_file(), named.output
    none = run("glasses_job", str(out), "--source", "nowhere")
    assert none.exit_code == 1 and "no faces to draw glasses on" in none.stderr


def test_glasses_job_unless_glasses_needs_an_eyeglasses_head(run, make_folder, tmp_path):
    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva
    from s3edit.weights.weightset import save_weight_set

    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q").exit_code == 0
    bare = save_weight_set(tmp_path / "bare", build_dva(preset("tiny-32-dlib")))
    result = run("glasses_job", str(out), "--unless-glasses", str(bare))
    assert result.exit_code == 1 and "has no Eyeglasses head to skip faces with glasses" in result.stderr


def test_export_default_ships_a_float16_set_with_its_hashes(run, tmp_path):
    from safetensors import safe_open

    from s3edit.weights.hashing import sha256_file
    from s3edit.weights.registry import load_registry, resolve_weights
    from s3edit.weights.weightset import load_weight_set, random_weight_set

    registry = tmp_path / "weights" / "registry.json"
    registry.parent.mkdir()
    original = json.loads((ROOT / "weights" / "registry.json").read_text())
    original["sets"] = {"default": {**original["sets"]["default"], "shipped": False}}
    registry.write_text(json.dumps(original))
    (tmp_path / "weights" / "default").mkdir()
    (tmp_path / "weights" / "default" / "MODEL_CARD.md").write_text("card")
    trained = random_weight_set(tmp_path / "trained")

    result = run("export_default", str(trained), "--registry", str(registry))
    assert result.exit_code == 0, result.output
    entry = json.loads(registry.read_text())["sets"]["default"]
    assert entry["shipped"] is True and "notes" not in entry
    folder = tmp_path / "weights" / "default"
    assert [f["filename"] for f in entry["files"]] == ["classifier.safetensors", "config.json", "model.safetensors"]
    for f in entry["files"]:
        assert sha256_file(folder / f["filename"]) == f["sha256"] and f["sha256"] in result.output
    assert (folder / "MODEL_CARD.md").read_text() == "card"  # not the script's to touch
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("encoder.linear.weight").dtype == torch.float16
    assert resolve_weights(None, load_registry(registry)) == folder
    ours, theirs = load_weight_set(folder), load_weight_set(trained)
    assert ours.classifier.names == theirs.classifier.names
    torch.testing.assert_close(ours.model.encoder.linear.weight, theirs.model.encoder.linear.weight,
                               rtol=1e-3, atol=1e-4)


def test_export_default_needs_heads(run, tmp_path):
    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva
    from s3edit.weights.weightset import save_weight_set

    bare = save_weight_set(tmp_path / "bare", build_dva(preset("tiny-32-dlib")))
    result = run("export_default", str(bare), "--registry", str(ROOT / "weights" / "registry.json"))
    assert result.exit_code == 1 and "has no attribute heads; add them with" in result.stderr


def test_smiling_job_errors_and_output(run, make_folder, tmp_path):
    result = run("smiling_job", str(tmp_path))
    assert result.exit_code == 1 and "holds no finished aligned portraits" in result.stderr
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q").exit_code == 0
    none = run("smiling_job", str(out))
    assert none.exit_code == 1 and "no person of 'london' is photographed both neutral and smiling" in none.stderr
    assert "Traceback" not in none.output
    meta = json.loads((out / "dataset.json").read_text())
    for item, smiling in zip(meta["items"], ("no", "yes")):
        item |= {"source": "london", "person": "p0", "smiling": smiling}
    (out / "dataset.json").write_text(json.dumps(meta))
    result = run("smiling_job", str(out))
    assert result.exit_code == 0, result.output
    assert "1 faces with a smile (own)" in result.stdout
    pairs = json.loads((out / "smiling-job-pairs.json").read_text())
    assert pairs["attribute"] == "Smiling" and pairs["frames"] == [[0, 0]] and pairs["with"] == "smiling-job"
    assert Image.open(out / "smiling-job-sheet.png").size == (3 * 32, 32)  # neutral, composite, smiling photo
    result = run("smiling_job", str(out), "--style", "classic")  # the face not photographed smiling
    assert result.exit_code == 0 and "1 faces with a smile (classic)" in result.stdout, result.output
    pairs = json.loads((out / "classic-smiling-job-pairs.json").read_text())
    assert pairs["frames"] == [[0, 0]] and pairs["with"] == "classic-smiling-job"
    assert Image.open(out / "classic-smiling-job-sheet.png").size == (2 * 32, 32)
    bad = run("smiling_job", str(out), "--style", "grin")
    assert bad.exit_code == 1 and "unknown smile style 'grin'; one of own, classic." in bad.stderr
