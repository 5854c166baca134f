"""The bundled default weight set: registered, intact, small, documented, and
README's main command (`s3edit edit examples/astronaut.mp4 --attr Eyeglasses --scale
0.6`) runs with it offline, without --weights."""

from __future__ import annotations

import json

import pytest

from s3edit.weights.hashing import sha256_file
from s3edit.weights.registry import REGISTRY_PATH, load_registry, resolve_weights
from s3edit.weights.weightset import load_weight_set
from s3edit.video.io import probe

ROOT = REGISTRY_PATH.parents[1]
CREDITS = ("doi:10.6084/m9.figshare.5047666.v5", "doi:10.6084/m9.figshare.4220517.v1", "Pixabay",
           "US Congress")


@pytest.fixture(scope="module")
def default_folder():
    registry = load_registry(REGISTRY_PATH)
    entry = registry.entries[registry.default]
    assert entry.kind == "bundled" and entry.shipped, "the default weight set must ship"
    return resolve_weights(None, registry), entry


def test_files_match_the_registry_and_fit_the_limit(default_folder):
    folder, entry = default_folder
    assert entry.files and all(f.sha256 for f in entry.files)
    for f in entry.files:
        assert sha256_file(folder / f.filename) == f.sha256, f.filename
    assert sum((folder / f.filename).stat().st_size for f in entry.files) < 50e6


def test_its_own_checksums_agree_with_the_registry(default_folder):
    """weights/default/checksums.json (what every load checks) records the same sha256 as
    the registry for each tensor file, and the files' sizes."""
    folder, entry = default_folder
    recorded = json.loads((folder / "checksums.json").read_text())["files"]
    registry = {f.filename: f.sha256 for f in entry.files}
    assert sorted(recorded) == sorted(n for n in registry if n.endswith(".safetensors"))
    for name, file_sum in recorded.items():
        assert file_sum == {"size": (folder / name).stat().st_size, "sha256": registry[name]}, name


def test_it_loads_with_the_four_heads_and_the_offline_encoders(default_folder):
    ws = load_weight_set(default_folder[0])
    assert {"Eyeglasses", "Smiling", "Male", "Young"} <= set(ws.classifier.names)
    assert (ws.config.id_encoder, ws.config.lnd_encoder) == ("dlib", "external")
    assert ws.classifier.weight.shape[1] == ws.config.id_dim == 128


def test_model_card_credits_the_data_and_says_what_it_cannot_do(default_folder):
    card = (default_folder[0] / "MODEL_CARD.md").read_text()
    for credit in CREDITS:
        assert credit in card, credit
    assert "CC BY 4.0" in card and "real-labelled" in card and "scripts/export_default.py" in card


@pytest.mark.slow  # ~1 min of CPU: align, encode and decode 50 frames of 64 px at 5 steps, paste
def test_readme_main_command_runs_on_the_default_set(cli, example_clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("-q", "edit", str(example_clip), "--attr", "Eyeglasses", "--scale", "0.6", "--steps", "5")
    assert result.exit_code == 0, result.stderr
    outputs = list(tmp_path.glob("astronaut_*.mp4"))
    assert len(outputs) == 1, outputs
    src, dst = probe(example_clip), probe(outputs[0])
    assert (dst.n_frames, dst.width, dst.height, dst.has_audio) == (src.n_frames, src.width, src.height, True)
    manifest = json.loads((tmp_path / "astronaut.s3job" / "manifest.json").read_text())
    assert manifest["stages"]["encode"]["done"]


@pytest.mark.slow  # ~30 s of CPU: align the example clip, 4 crops encoded and decoded at 20 steps
def test_its_eyeglasses_edit_changes_the_eyes_and_keeps_the_rest(cli, example_clip, tmp_path):
    import numpy as np
    import torch

    from s3edit.face.mask import edit_region, eye_band, face_mask
    from s3edit.job import Job
    from s3edit.model import ddim
    from s3edit.train.data import load_job_crops
    from s3edit.model.attributes import edited_identity

    job = tmp_path / "astronaut.s3job"
    assert cli("-q", "align", str(example_clip), "-o", str(job)).exit_code == 0
    ws = load_weight_set(resolve_weights(None))
    size, model = ws.config.image_size, ws.model
    data = load_job_crops(Job.open(job), size)
    index = torch.linspace(0, len(data) - 1, 4).round().long()
    x, lnd = data.crops[index], data.landmarks[index]
    band = torch.from_numpy(eye_band(lnd.numpy(), size))
    rest = torch.from_numpy(face_mask(lnd.numpy(), size).astype(bool)) & ~torch.from_numpy(
        eye_band(lnd.numpy(), size, pad=0.75))
    with torch.no_grad():
        z_id, z_lnd = model.z_id(x, (lnd + 0.5) / size), model.z_lnd(x, (lnd + 0.5) / size)
        x_T = ddim.ddim_encode(model, x, model.fuse(z_id, z_lnd), 20)
        base = ddim.ddim_decode(model, x_T, model.fuse(z_id, z_lnd), 20)
        z_new = torch.stack([edited_identity(z, [("Eyeglasses", 0.6)], ws.classifier) for z in z_id])
        out = ddim.ddim_decode(model, x_T, model.fuse(z_new, z_lnd), 20)
    change = (out - base).abs().mean(1) / 2  # share of the [-1, 1] range, (4, S, S)
    assert change[band].mean() > 0.10 and change[band].mean() > 3 * change[~band].mean()
    # the skin keeps its tone: the face outside the glasses' region, mean colour per frame
    tone = lambda im: torch.stack([im[i][:, rest[i]].mean(1) for i in range(len(im))])  # noqa: E731
    assert float((tone(out) - tone(base)).abs().max()) < 0.08
    assert np.isfinite(out.numpy()).all()
    # edit --region auto: the glasses survive being confined to the eyes' region
    region = edit_region(["Eyeglasses"], lnd, size)
    with torch.no_grad():
        confined = ddim.ddim_decode_in_region(model, x_T, x, model.fuse(z_new, z_lnd), region, 20, edit_start=700)
    change = (confined - x).abs().mean(1) / 2
    assert change[band].mean() > 0.10
    # ... and the eyes, seen through clear lenses, stay the original's
    for eye in (lnd[:, 36:42], lnd[:, 42:48]):
        col, row = eye.mean(1).round().long().unbind(-1)
        assert float(change[torch.arange(len(change)), row, col].max()) < 0.01
    assert torch.equal(change[region[:, 0] == 0], torch.zeros_like(change[region[:, 0] == 0]))
