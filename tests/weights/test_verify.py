"""``verify``: sha256 against the registry (hub sets, model files of packages) and
against a set's own checksums.json, then every tensor of the set loaded and checked
finite (sets written by ``save_weight_set``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from s3edit.weights import registry as reg
from s3edit.weights import verify as vf

REPO = "s3edit-test/tiny"
CONFIG_BYTES = b'{"format": "s3edit-weights", "version": 1}\n'
MODEL_BYTES = bytes(range(256)) * 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(offline):
    """Offline, isolated; a registry with one hub set ('tiny')."""
    path = offline / "registry.json"
    path.write_text(json.dumps({
        "format": "s3edit-weights-registry", "version": 1, "default": "tiny",
        "sets": {
            "tiny": {"kind": "hub", "repo_id": REPO, "licence": "CC0-1.0", "description": "test set",
                     "files": [{"filename": "config.json", "sha256": sha(CONFIG_BYTES)},
                               {"filename": "model.safetensors", "sha256": sha(MODEL_BYTES)}]},
        },
    }))
    return reg.load_registry(path), offline


def test_verify_package_file(env):
    registry = reg.load_registry(reg.REGISTRY_PATH)
    entry = registry.get("dlib-shape-5")
    if reg.package_file(entry) is None:
        pytest.skip("face_recognition_models is not installed")
    report = vf.verify_weights("dlib-shape-5", registry)
    assert report.ok and report.files[0].status == "ok"


def test_verify_reports_a_hash_mismatch(env, hub_cache, monkeypatch):
    registry, _ = env
    hub_cache(REPO, {"config.json": CONFIG_BYTES, "model.safetensors": b"garbage"})
    monkeypatch.setattr(vf, "_verify_tensors", lambda folder, report: None)  # hashes only here
    report = vf.verify_weights("tiny", registry)
    assert not report.ok
    assert [c.status for c in report.files] == ["ok", "mismatch"]
    assert report.problems == [
        f"{report.files[1].file}: sha256 {sha(b'garbage')} does not match the registry's {sha(MODEL_BYTES)}"
    ]
    assert "FAILED: 1 problem(s)" in vf.format_verify(report)


# --- verify on real weight sets -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """A real weight set (the tiny-32 preset, fp16) written by save_weight_set."""
    import torch

    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva
    from s3edit.weights.weightset import save_weight_set

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sets") / "tiny"
    save_weight_set(folder, build_dva(preset("tiny-32")), meta={"name": "tiny", "licence": "CC0-1.0"},
                    dtype=torch.float16)
    return folder


def test_verify_a_good_folder(tiny_set, env):
    registry, _ = env
    report = vf.verify_weights(str(tiny_set), registry)
    assert report.ok, report.problems
    assert report.kind == "folder" and report.notes == []
    model = tiny_set / "model.safetensors"
    assert [(c.file, c.status, c.against, c.size) for c in report.files] == [
        (str(model), "ok", "checksums.json", model.stat().st_size)]
    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva

    assert report.tensors == len(build_dva(preset("tiny-32"), device="meta").state_dict())
    assert vf.format_verify(report).endswith("ok")


def test_verify_a_hub_set_hashes_and_loads(tiny_set, env, hub_cache):
    """A hub set in the cache: every registry sha256 is checked, then the tensors."""
    _, tmp = env
    files = {name: (tiny_set / name).read_bytes() for name in ("config.json", "model.safetensors")}
    hub_cache(REPO, files)
    path = tmp / "registry2.json"
    path.write_text(json.dumps({"format": "s3edit-weights-registry", "version": 1, "default": "tiny", "sets": {
        "tiny": {"kind": "hub", "repo_id": REPO, "licence": "CC0-1.0", "description": "t",
                 "files": [{"filename": n, "sha256": sha(d)} for n, d in files.items()]}}}))
    report = vf.verify_weights("tiny", reg.load_registry(path))
    assert report.ok, report.problems
    assert [(c.status, c.against) for c in report.files] == [("ok", "registry")] * 2 and report.tensors > 0
    assert report.notes == []  # no checksums.json in the hub's files, but the registry has every sha256


def test_verify_finds_nan_and_damaged_files(tiny_set, env, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    registry, _ = env
    bad = tmp_path / "bad"
    shutil.copytree(tiny_set, bad)
    state = load_file(str(bad / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    report = vf.verify_weights(str(bad), registry)
    recorded = json.loads((tiny_set / "checksums.json").read_text())["files"]["model.safetensors"]["sha256"]
    assert len(report.problems) == 2 and report.problems[0].startswith(
        f"{bad / 'model.safetensors'}: sha256 {sha((bad / 'model.safetensors').read_bytes())} does not match the "
        f"one in checksums.json {recorded}")
    assert report.problems[1] == f"1 tensor(s) hold NaN or inf: model.{key}"

    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])  # a truncated download
    report = vf.verify_weights(str(bad), registry)
    assert len(report.problems) == 2 and report.problems[1].startswith("cannot load: ")
    recorded_size = json.loads((tiny_set / "checksums.json").read_text())["files"]["model.safetensors"]["size"]
    assert f"(size {len(data) // 2} where {recorded_size} is recorded)" in report.problems[0]
    assert "is not a readable safetensors file" in report.problems[1]
    assert report.tensors is None


def test_verify_finds_a_flipped_byte_in_any_folder(tiny_set, env, tmp_path):
    """The issue's case: a copy of a set, one byte flipped in the middle of its tensors."""
    import shutil

    registry, _ = env
    bad = Path(shutil.copytree(tiny_set, tmp_path / "bad"))
    path = bad / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = vf.verify_weights(str(bad), registry)
    assert not report.ok and report.tensors is not None
    assert report.problems == [f"{path}: sha256 {sha(bytes(data))} does not match the one in checksums.json "
                               f"{sha256_of_record(tiny_set)}"]
    assert vf.format_verify(report).endswith("FAILED: 1 problem(s)")


def test_verify_notes_a_set_without_checksums_and_unrecorded_files(tiny_set, env, tmp_path):
    import shutil

    registry, _ = env
    old = Path(shutil.copytree(tiny_set, tmp_path / "old"))
    (old / "checksums.json").unlink()
    report = vf.verify_weights(str(old), registry)
    assert report.ok and report.files == []
    assert report.notes and report.notes[0].startswith("no checksums.json: the set records no sha256")
    assert "  note: no checksums.json" in vf.format_verify(report)
    added = Path(shutil.copytree(tiny_set, tmp_path / "added"))
    shutil.copyfile(added / "model.safetensors", added / "s3.safetensors")
    report = vf.verify_weights(str(added), registry)
    assert f"{added / 's3.safetensors'}: not recorded in checksums.json (added after the set was written)" \
        in report.problems


def sha256_of_record(folder: Path) -> str:
    return json.loads((folder / "checksums.json").read_text())["files"]["model.safetensors"]["sha256"]
