"""Hub downloads through the real ``hf_hub_download`` against hub caches the tests lay
out on disk (``models--org--name/{blobs,snapshots/<commit>,refs/main}``), sha256
refusal, source-file checks on import, and ``verify``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from s3edit.errors import OutputError, WeightsError
from s3edit.weights import download as dl
from s3edit.weights import registry as reg

REPO = "s3edit-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CONFIG_BYTES = b'{"format": "s3edit-weights", "version": 1}\n'
MODEL_BYTES = bytes(range(256)) * 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def populate_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay files out as huggingface_hub does: content in blobs/, relative symlinks in
    snapshots/<commit>/, the commit hash in refs/main. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / sha(data)
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated S3EDIT_HOME and hub cache, offline; a registry with one hub set."""
    monkeypatch.setenv("S3EDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({
        "format": "s3edit-weights-registry", "version": 1, "default": "tiny",
        "sets": {
            "tiny": {"kind": "hub", "repo_id": REPO, "licence": "CC0-1.0", "description": "test set",
                     "files": [{"filename": "config.json", "sha256": sha(CONFIG_BYTES)},
                               {"filename": "model.safetensors", "sha256": sha(MODEL_BYTES)}]},
            "dva": {"kind": "import", "licence": "MIT", "description": "d",
                    "files": [{"role": "checkpoint", "filename": "dva.ckpt", "url": "https://example.org/dva",
                               "sha256": sha(b"the real checkpoint")}]},
        },
    }))
    return reg.load_registry(path), tmp_path


def test_sha256_file_streams_and_matches_hashlib(tmp_path, monkeypatch):
    f = tmp_path / "f.bin"
    f.write_bytes(MODEL_BYTES * 5)
    assert dl.sha256_file(f) == sha(MODEL_BYTES * 5)
    monkeypatch.setattr(dl, "HASH_PROGRESS_MIN", 1)  # the progress-bar path
    monkeypatch.setattr(dl, "HASH_CHUNK", 1000)
    assert dl.sha256_file(f) == sha(MODEL_BYTES * 5)


def test_download_resolves_from_a_populated_cache(env):
    registry, tmp = env
    snapshot = populate_hub_cache(tmp / "hub", REPO, {"config.json": CONFIG_BYTES, "model.safetensors": MODEL_BYTES})
    folder = dl.download_weights("tiny", registry)
    assert folder == snapshot
    assert (folder / "model.safetensors").read_bytes() == MODEL_BYTES
    assert reg.resolve_weights("tiny", registry) == snapshot
    assert reg.resolve_weights(None, registry) == snapshot  # the default


def test_corrupt_cached_file_is_refused_and_deleted(env):
    registry, tmp = env
    snapshot = populate_hub_cache(tmp / "hub", REPO, {"config.json": CONFIG_BYTES, "model.safetensors": b"garbage"})
    blob = (snapshot / "model.safetensors").resolve()
    with pytest.raises(WeightsError) as err:
        dl.download_weights("tiny", registry)
    assert str(err.value) == (
        f"model.safetensors of weight set 'tiny' has sha256 {sha(b'garbage')}, not the registry's "
        f"{sha(MODEL_BYTES)}; the corrupt file was deleted from the cache, so run "
        "`s3edit weights download tiny` again."
    )
    assert not blob.exists() and not (snapshot / "model.safetensors").is_symlink()
    assert (snapshot / "config.json").read_bytes() == CONFIG_BYTES  # the good file stays
    with pytest.raises(WeightsError, match="weight set 'tiny' is not downloaded; run `s3edit weights download tiny`"):
        reg.resolve_weights("tiny", registry)


def test_empty_cache_offline_says_what_to_run(env):
    registry, tmp = env
    with pytest.raises(WeightsError) as err:
        dl.download_weights("tiny", registry)
    assert str(err.value) == (
        f"cannot download config.json of weight set 'tiny' from {REPO}: offline mode is on (HF_HUB_OFFLINE) "
        f"and the file is not in the cache at {str(tmp / 'hub')!r}; connect to the internet, unset "
        "HF_HUB_OFFLINE, and run `s3edit weights download tiny`."
    )


def test_unreachable_hub_says_what_to_run(env, monkeypatch):
    registry, _ = env
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    with pytest.raises(WeightsError, match=r"^cannot download config.json of weight set 'tiny' from "
                       r"s3edit-test/tiny: the hub could not be reached and the file is not in the cache"):
        dl.download_weights("tiny", registry)


def test_import_entries_cannot_be_downloaded(env):
    registry, _ = env
    with pytest.raises(WeightsError, match=r"^weight set 'dva' cannot be downloaded automatically; download "
                       r"dva.ckpt from https://example.org/dva and run `s3edit weights import PATH --name dva`"):
        dl.download_weights("dva", registry)
    with pytest.raises(WeightsError, match="unknown weight set 'tinyy'; did you mean 'tiny'"):
        dl.download_weights("tinyy", registry)


def test_import_refuses_a_source_with_the_wrong_sha256(env):
    registry, tmp = env
    ckpt = tmp / "dva.ckpt"
    ckpt.write_bytes(b"not the real checkpoint")
    with pytest.raises(WeightsError) as err:
        dl.import_weights(ckpt, name="dva", registry=registry)
    assert str(err.value) == (
        f"checkpoint file {str(ckpt)!r} has sha256 {sha(b'not the real checkpoint')}, but weight set 'dva' "
        f"expects {sha(b'the real checkpoint')}; the file is damaged or a different release, so download it again."
    )
    assert not (tmp / "home" / "weights" / "dva").exists()


def test_import_refuses_to_overwrite(env):
    registry, tmp = env
    (tmp / "home" / "weights" / "dva").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"weight set 'dva' already exists at .*; pass --overwrite to replace it"):
        dl.import_weights(tmp / "x.ckpt", name="dva", registry=registry)


def test_verify_package_file(env):
    registry = reg.load_registry(reg.REGISTRY_PATH)
    entry = registry.get("dlib-shape-5")
    if reg.package_file(entry) is None:
        pytest.skip("face_recognition_models is not installed")
    report = dl.verify_weights("dlib-shape-5", registry)
    assert report.ok and report.files[0].status == "ok"


def test_verify_reports_a_hash_mismatch(env, monkeypatch):
    registry, tmp = env
    populate_hub_cache(tmp / "hub", REPO, {"config.json": CONFIG_BYTES, "model.safetensors": b"garbage"})
    monkeypatch.setattr(dl, "_verify_tensors", lambda folder, report: None)  # hashes only here
    report = dl.verify_weights("tiny", registry)
    assert not report.ok
    assert [c.status for c in report.files] == ["ok", "mismatch"]
    assert report.problems == [
        f"{report.files[1].file}: sha256 {sha(b'garbage')} does not match the registry's {sha(MODEL_BYTES)}"
    ]
    assert "FAILED: 1 problem(s)" in dl.format_verify(report)


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
    report = dl.verify_weights(str(tiny_set), registry)
    assert report.ok, report.problems
    assert report.kind == "folder" and report.files == []
    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva

    assert report.tensors == len(build_dva(preset("tiny-32"), device="meta").state_dict())
    assert dl.format_verify(report).endswith("ok")


def test_verify_a_hub_set_hashes_and_loads(tiny_set, env):
    """A hub set in the cache: every registry sha256 is checked, then the tensors."""
    _, tmp = env
    files = {name: (tiny_set / name).read_bytes() for name in ("config.json", "model.safetensors")}
    populate_hub_cache(tmp / "hub", REPO, files)
    path = tmp / "registry2.json"
    path.write_text(json.dumps({"format": "s3edit-weights-registry", "version": 1, "default": "tiny", "sets": {
        "tiny": {"kind": "hub", "repo_id": REPO, "licence": "CC0-1.0", "description": "t",
                 "files": [{"filename": n, "sha256": sha(d)} for n, d in files.items()]}}}))
    report = dl.verify_weights("tiny", reg.load_registry(path))
    assert report.ok, report.problems
    assert [c.status for c in report.files] == ["ok", "ok"] and report.tensors > 0


def test_verify_finds_nan_and_damaged_files(tiny_set, env, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    registry, _ = env
    bad = tmp_path / "bad"
    shutil.copytree(tiny_set, bad)
    state = load_file(str(bad / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, str(bad / "model.safetensors"))
    report = dl.verify_weights(str(bad), registry)
    assert report.problems == [f"1 tensor(s) hold NaN or inf: model.{key}"]

    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])  # a truncated download
    report = dl.verify_weights(str(bad), registry)
    assert len(report.problems) == 1 and report.problems[0].startswith("cannot load: ")
    assert "is not a readable safetensors file" in report.problems[0]
    assert report.tensors is None
