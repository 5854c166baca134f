"""``s3edit weights list | download | import | verify``: output, exit codes and every
error message, on weight files the tests make."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

REPO = "s3edit-test/tiny"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch) -> Path:
    """Isolated S3EDIT_HOME and hub cache, offline, the project's registry."""
    monkeypatch.setenv("S3EDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("S3EDIT_REGISTRY", raising=False)
    return tmp_path


def hub_registry(tmp_path: Path, monkeypatch, files: dict[str, bytes]) -> None:
    """A registry naming one hub set 'tiny' whose sha256s are those of ``files``."""
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({
        "format": "s3edit-weights-registry", "version": 1, "default": "tiny",
        "sets": {"tiny": {"kind": "hub", "repo_id": REPO, "licence": "CC0-1.0", "description": "t",
                          "files": [{"filename": n, "sha256": sha(d)} for n, d in files.items()]}},
    }))
    monkeypatch.setenv("S3EDIT_REGISTRY", str(path))


def cache_files(cache: Path, files: dict[str, bytes]) -> Path:
    """The huggingface_hub cache layout: blobs/, snapshots/<commit>/ links, refs/main."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    for d in (repo / "blobs", repo / "refs", snap):
        d.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        (repo / "blobs" / sha(data)).write_bytes(data)
        (snap / name).symlink_to(Path("..", "..", "blobs", sha(data)))
    return snap


def assert_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# --- list -----------------------------------------------------------------------------


def test_list_table_and_json(cli, env):
    result = cli("weights", "list")
    assert result.exit_code == 0
    for name in ("dva", "default", "dlib-shape-68"):
        assert name in result.stdout
    rows = {r["name"]: r for r in json.loads(cli("weights", "list", "--json").stdout)}
    assert rows["dva"]["kind"] == "import" and rows["dva"]["installed"] is False
    assert rows["default"]["default"] is True
    assert "iBUG 300-W" in rows["dlib-shape-68"]["licence_notes"]


def test_list_shows_s3_facts_of_a_tuned_set(cli, env):
    folder = env / "home" / "weights" / "tuned"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"format": "s3edit-weights", "version": 1, "licence": "MIT",
                                                    "s3": {"K": 5, "q": 0.1, "groups_zeroed": [2, 5]}}))
    rows = {r["name"]: r for r in json.loads(cli("weights", "list", "--json").stdout)}
    assert rows["tuned"]["kind"] == "local" and rows["tuned"]["s3_summary"] == "K=5 q=0.1 zeroed=2"
    assert "K=5 q=0.1 zeroed=2" in cli("weights", "list").stdout


# --- download --------------------------------------------------------------------------


def test_download_from_cache_prints_the_folder(cli, env, monkeypatch):
    files = {"config.json": b"{}", "model.safetensors": b"weights"}
    hub_registry(env, monkeypatch, files)
    snap = cache_files(env / "hub", files)
    result = cli("weights", "download", "tiny")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(snap)


def test_download_offline_empty_cache(cli, env, monkeypatch):
    hub_registry(env, monkeypatch, {"config.json": b"{}"})
    assert_error(cli("weights", "download", "tiny"),
                 "cannot download config.json of weight set 'tiny'", "offline mode is on",
                 "run `s3edit weights download tiny`")


def test_download_corrupt_file(cli, env, monkeypatch):
    hub_registry(env, monkeypatch, {"config.json": b"{}"})
    cache_files(env / "hub", {"config.json": b"{broken"})
    assert_error(cli("weights", "download", "tiny"), "has sha256", "deleted from the cache")


def test_download_unknown_and_import_only(cli, env):
    assert_error(cli("weights", "download", "dav"), "unknown weight set 'dav'; did you mean 'dva'")
    assert_error(cli("weights", "download", "dva"), "cannot be downloaded automatically",
                 "s3edit weights import PATH --name dva")


# --- verify ----------------------------------------------------------------------------


def test_verify_errors(cli, env, tmp_path):
    assert_error(cli("weights", "verify", "dvaa"), "did you mean 'dva'")
    assert_error(cli("weights", "verify", "dva"), "weight set 'dva' is not imported")
    assert_error(cli("weights", "verify", str(tmp_path / "nope")), "does not exist")


def test_verify_model_file(cli, env):
    result = cli("weights", "verify", "dlib-shape-5", "--json")
    if result.exit_code == 1 and "is not installed" in result.stderr:
        pytest.skip("face_recognition_models is not installed")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["ok"] and report["files"][0]["status"] == "ok"


# --- import ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_dva(tmp_path_factory):
    """A Lightning-style checkpoint of the tiny-32 preset: ``model.*`` and
    ``ema_model.*`` (fp16, sharing storage except ``changed``, which differs in the raw
    copy), optimizer state and training counters. Returns (path, ema state, changed)."""
    import torch

    from s3edit.model.config import preset
    from s3edit.model.dva import build_dva

    torch.manual_seed(0)
    ema = {k: v.half() if v.is_floating_point() else v for k, v in build_dva(preset("tiny-32")).state_dict().items()}
    changed = next(k for k, v in ema.items() if v.is_floating_point() and v.numel() > 1)
    raw = {**ema, changed: ema[changed] + 1}
    ckpt = {
        "epoch": 51, "global_step": 1000000, "lr_schedulers": [],
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}],
        "state_dict": {**{f"model.{k}": v for k, v in raw.items()}, **{f"ema_model.{k}": v for k, v in ema.items()}},
    }
    path = tmp_path_factory.mktemp("ckpt") / "epoch=51-step=1000000.ckpt"
    torch.save(ckpt, path)
    return path, ema, changed


@pytest.fixture
def tiny_import(monkeypatch):
    """The importer builds the tiny-32 network instead of DVA's full one."""
    from s3edit.weights import importer
    from s3edit.model.config import preset

    monkeypatch.setattr(importer, "dva_256", lambda: preset("tiny-32"))


def test_import_a_small_fake_checkpoint(cli, env, fake_dva, tiny_import):
    import torch
    from safetensors.torch import load_file

    path, ema, changed = fake_dva
    result = cli("weights", "import", str(path), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    folder = env / "home" / "weights" / "dva"
    assert summary["ok"] and summary["written"] and summary["path"] == str(folder)
    r = summary["report"]
    assert r["tensors"] == r["mapped"] == r["written"] == len(ema) and r["copy"] == "ema_model"
    assert r["loader"] == "weights_only" and r["missing"] == r["unmapped"] == r["mismatched"] == []
    assert summary["sources"] == [{"role": "checkpoint", "file": str(path), "sha256": sha(path.read_bytes()),
                                   "expected": None}]
    written = load_file(str(folder / "model.safetensors"))
    assert torch.equal(written[changed], ema[changed])  # the EMA copy, not the raw one

    rows = {row["name"]: row for row in json.loads(cli("weights", "list", "--json").stdout)}
    assert rows["dva"]["installed"] and rows["dva"]["path"] == str(folder)
    verified = cli("weights", "verify", "dva", "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["tensors"] == len(ema)

    assert_error(cli("weights", "import", str(path)), "weight set 'dva' already exists", "pass --overwrite")


def test_import_lists_what_did_not_map(cli, env, fake_dva, tiny_import):
    import torch

    path, ema, _ = fake_dva
    dropped = sorted(ema)[0]
    partial = env / "partial.ckpt"
    torch.save({"state_dict": {f"ema_model.{k}": v for k, v in ema.items() if k != dropped}
                | {"ema_model.extra.weight": torch.zeros(2)}}, partial)
    result = cli("weights", "import", str(partial), "--name", "partial")
    assert result.exit_code == 1
    assert result.stdout.startswith("NOT imported 'partial': nothing was written")
    assert f"tensors: {len(ema)} in the checkpoint, {len(ema) - 1} mapped (0 aliases checked), 0 written" \
        in result.stdout
    assert f"sha256 partial.ckpt: {sha(partial.read_bytes())} (the registry records none)" in result.stdout
    assert f"missing from the checkpoint (1):\n    {dropped}\n" in result.stdout
    assert "not used (no matching tensor) (1):\n    extra.weight\n" in result.stdout
    assert result.stdout.rstrip().endswith("FAILED: not every tensor mapped")
    assert not (env / "home" / "weights" / "partial").exists()


def test_import_flags_unused_tensors(cli, env, fake_dva, tiny_import):
    import torch

    path, ema, _ = fake_dva
    extra = env / "extra.ckpt"
    torch.save({"state_dict": {f"ema_model.{k}": v for k, v in ema.items()} | {"ema_model.extra.bias": torch.ones(1)}},
               extra)
    result = cli("weights", "import", str(extra), "--name", "extra", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["written"] and not summary["ok"] and summary["report"]["unmapped"] == ["extra.bias"]


def test_import_errors(cli, env, tmp_path, monkeypatch):
    assert_error(cli("weights", "import", str(tmp_path / "absent.ckpt")), "checkpoint file", "does not exist")
    assert_error(cli("weights", "import", str(tmp_path), "--name", "x"), "is a directory")
    assert_error(cli("weights", "import", str(tmp_path / "a.ckpt"), "--name", "a/b"), "must be a plain name")
    # a known sha256 that does not match: refused before the importer runs
    ckpt = tmp_path / "dva.ckpt"
    ckpt.write_bytes(b"a different release")
    reg_path = tmp_path / "registry.json"
    reg_path.write_text(json.dumps({"format": "s3edit-weights-registry", "version": 1, "default": "dva", "sets": {
        "dva": {"kind": "import", "licence": "MIT", "description": "d",
                "files": [{"role": "checkpoint", "filename": "dva.ckpt", "sha256": sha(b"the release")}]}}}))
    monkeypatch.setenv("S3EDIT_REGISTRY", str(reg_path))
    assert_error(cli("weights", "import", str(ckpt)), f"has sha256 {sha(b'a different release')}",
                 f"expects {sha(b'the release')}", "download it again")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_import_runs_no_code_from_the_file(cli, env, tmp_path):
    import os
    import pickle

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload()}))
    assert_error(cli("weights", "import", str(evil), "--name", "evil"), "tries to run code when loaded")
    assert not marker.exists()
    assert not (env / "home" / "weights" / "evil").exists()


def test_import_into_a_folder_of_your_choice_with_the_umask_modes(cli, env, fake_dva, tiny_import):
    """``-o DIR`` writes the set there (``--name`` stays its name); the folder and files
    get the modes of the umask (0755/0644 under 022) and carry their checksums."""
    import os
    import stat

    path, ema, _ = fake_dva
    out = env / "sets" / "dva-here"
    old = os.umask(0o022)
    try:
        result = cli("weights", "import", str(path), "-o", str(out), "--name", "mine", "--json")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out) and summary["name"] == "mine"
    assert not (env / "home" / "weights" / "mine").exists()
    assert json.loads((out / "config.json").read_text())["name"] == "mine"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "config.json": 0o644, "model.safetensors": 0o644, "checksums.json": 0o644}
    verified = cli("weights", "verify", str(out), "--json")
    assert verified.exit_code == 0 and [f["status"] for f in json.loads(verified.stdout)["files"]] == ["ok"]

    before = (out / "model.safetensors").stat().st_mtime_ns
    assert_error(cli("weights", "import", str(path), "-o", str(out)),
                 f"folder {str(out)!r} already exists; pass --overwrite to replace it.")
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    again = cli("weights", "import", str(path), "-o", str(out), "--overwrite")
    assert again.exit_code == 0, again.stderr
