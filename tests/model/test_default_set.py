"""The bundled default weight set (issue 6): registered, intact, small, documented, and
README's main command (`s3edit edit examples/astronaut.mp4 --attr Eyeglasses --scale
0.6`) runs with it offline, without --weights."""

from __future__ import annotations

import json

import pytest

from s3edit.model.download import sha256_file
from s3edit.model.registry import REGISTRY_PATH, load_registry, resolve_weights
from s3edit.model.weightset import load_weight_set
from s3edit.video.io import probe

ROOT = REGISTRY_PATH.parents[1]
CREDITS = ("doi:10.6084/m9.figshare.5047666.v5", "doi:10.6084/m9.figshare.4220517.v1", "Pixabay",
           "US Congress")


@pytest.fixture(scope="module")
def default_folder():
    registry = load_registry(REGISTRY_PATH)
    entry = registry.entries[registry.default]
    assert entry.kind == "bundled" and entry.shipped, "the default weight set must ship (issue 6)"
    return resolve_weights(None, registry), entry


def test_files_match_the_registry_and_fit_the_limit(default_folder):
    folder, entry = default_folder
    assert entry.files and all(f.sha256 for f in entry.files)
    for f in entry.files:
        assert sha256_file(folder / f.filename) == f.sha256, f.filename
    assert sum((folder / f.filename).stat().st_size for f in entry.files) < 50e6


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

