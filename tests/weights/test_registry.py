"""The weights registry: the shipped file, name/path resolution and every error it raises."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from s3edit.errors import WeightsError
from s3edit.weights import registry as reg
from s3edit.weights.hashing import sha256_file

SHA256 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty S3EDIT_HOME; returns its weights folder."""
    monkeypatch.setenv("S3EDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("S3EDIT_REGISTRY", raising=False)
    return tmp_path / "home" / "weights"


def make_set(folder: Path, **config) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"format": "s3edit-weights", "version": 1, **config}))
    return folder


def write_registry(path: Path, sets: dict, default: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "s3edit-weights-registry", "version": 1, "default": default, "sets": sets}))
    return path


# --- the shipped registry --------------------------------------------------------------


def test_shipped_registry_is_well_formed():
    registry = reg.load_registry(reg.REGISTRY_PATH)
    assert registry.default in registry.entries
    assert registry.entries[registry.default].is_weight_set
    for entry in registry.entries.values():
        assert entry.licence and entry.description, entry.name
        for f in entry.files:
            assert f.sha256 is None or SHA256.match(f.sha256), (entry.name, f.filename)
        if any(f.sha256 is None for f in entry.files):
            assert entry.notes and "null" in entry.notes, f"{entry.name}: a null sha256 needs a note saying why"
    dva = registry.get("dva")
    assert dva.kind == "import"
    assert dva.file("checkpoint").filename == "epoch=51-step=1000000.ckpt"
    assert dva.file("checkpoint").url.startswith("https://")
    assert dva.file("classifier").required is False


def test_shipped_dlib_hashes_match_the_installed_files():
    registry = reg.load_registry(reg.REGISTRY_PATH)
    entry = registry.get("dlib-face-resnet")
    path = reg.package_file(entry)
    if path is None:
        pytest.skip("face_recognition_models is not installed")
    assert sha256_file(path) == entry.files[0].sha256


# --- names ------------------------------------------------------------------------------


def test_unknown_name_suggests_the_closest(home):
    with pytest.raises(WeightsError, match=r"unknown weight set 'dvaa'; did you mean 'dva'\?"):
        reg.resolve_weights("dvaa", reg.load_registry(reg.REGISTRY_PATH))


def test_unknown_name_without_close_match_says_list(home):
    with pytest.raises(WeightsError, match=r"unknown weight set 'zzzzzz'; run `s3edit weights list`"):
        reg.resolve_weights("zzzzzz", reg.load_registry(reg.REGISTRY_PATH))


def test_not_imported_says_where_to_download_and_what_to_run(home):
    registry = reg.load_registry(reg.REGISTRY_PATH)
    with pytest.raises(WeightsError) as err:
        reg.resolve_weights("dva", registry)
    msg = str(err.value)
    assert msg.startswith("weight set 'dva' is not imported; download epoch=51-step=1000000.ckpt from https://")
    assert msg.endswith("and run `s3edit weights import PATH --name dva`.")


def test_imported_set_resolves(home):
    folder = make_set(home / "dva")
    assert reg.resolve_weights("dva", reg.load_registry(reg.REGISTRY_PATH)) == folder


def test_unregistered_imported_set_resolves(home):
    folder = make_set(home / "mine")
    assert reg.resolve_weights("mine", reg.load_registry(reg.REGISTRY_PATH)) == folder


def test_model_file_is_not_a_weight_set(home):
    with pytest.raises(WeightsError, match="'dlib-shape-68' is a single model file .* not a weight set"):
        reg.resolve_weights("dlib-shape-68", reg.load_registry(reg.REGISTRY_PATH))


def test_default_and_bundled(tmp_path, home):
    path = write_registry(tmp_path / "w" / "registry.json", {
        "small": {"kind": "bundled", "folder": "small", "licence": "CC-BY-4.0", "description": "d",
                  "files": [{"filename": "config.json", "sha256": None}]},
    }, default="small")
    registry = reg.load_registry(path)
    with pytest.raises(WeightsError, match=r"the bundled weight set 'small' is missing from .*; reinstall s3edit"):
        reg.resolve_weights(None, registry)
    folder = make_set(tmp_path / "w" / "small")
    assert reg.resolve_weights(None, registry) == folder
    assert reg.resolve_weights("small", registry) == folder


def test_no_default(tmp_path, home):
    registry = reg.load_registry(write_registry(tmp_path / "r.json", {}))
    with pytest.raises(WeightsError, match="no weight set given and the registry names no default"):
        reg.resolve_weights(None, registry)


def test_registry_env_override(tmp_path, home, monkeypatch):
    path = write_registry(tmp_path / "r.json", {}, default="x")
    monkeypatch.setenv("S3EDIT_REGISTRY", str(path))
    assert reg.load_registry().default == "x"


# --- folders ----------------------------------------------------------------------------


def test_folder_path(tmp_path, home):
    registry = reg.load_registry(reg.REGISTRY_PATH)
    folder = make_set(tmp_path / "set")
    assert reg.resolve_weights(str(folder), registry) == folder
    assert reg.resolve_weights(folder, registry) == folder


def test_folder_errors(tmp_path, home):
    registry = reg.load_registry(reg.REGISTRY_PATH)
    with pytest.raises(WeightsError, match=r"weight-set folder '.*nowhere' does not exist"):
        reg.resolve_weights(str(tmp_path / "nowhere"), registry)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"is a file, not a weight-set folder; .*`s3edit weights import .*ckpt`"):
        reg.resolve_weights(str(ckpt), registry)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"holds no config.json, so it is not an s3edit weight set"):
        reg.resolve_weights(str(tmp_path / "empty"), registry)


def test_import_dir_rejects_paths(home):
    assert reg.import_dir("dva") == home / "dva"
    for bad in ("", "a/b", "..", ".hidden"):
        with pytest.raises(WeightsError, match="must be a plain name"):
            reg.import_dir(bad)


# --- broken registries -------------------------------------------------------------------


def test_registry_errors(tmp_path):
    with pytest.raises(WeightsError, match=r"weights registry '.*absent.json' is missing; reinstall s3edit"):
        reg.load_registry(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WeightsError, match=r"cannot be read .*; reinstall s3edit"):
        reg.load_registry(bad)
    bad.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(WeightsError, match="is not a version-1 s3edit weights registry"):
        reg.load_registry(bad)
    write_registry(bad, {"x": {"kind": "ftp"}})
    with pytest.raises(WeightsError, match="entry 'x' has unknown kind 'ftp'"):
        reg.load_registry(bad)
    write_registry(bad, {"x": {"kind": "hub"}})
    with pytest.raises(WeightsError, match="hub entry 'x' has no 'repo_id'"):
        reg.load_registry(bad)


# --- listing ------------------------------------------------------------------------------


def test_list_reports_installed_sets_and_s3_facts(home):
    make_set(home / "dva", licence="MIT")
    make_set(home / "tuned", licence="CC-BY-4.0", source="s3edit tune",
             s3={"K": 5, "q": 0.1, "groups_zeroed": ["brows"]})
    rows = {r.name: r for r in reg.list_weights(reg.load_registry(reg.REGISTRY_PATH))}
    assert rows["dva"].installed and rows["dva"].kind == "import" and rows["dva"].path == str(home / "dva")
    assert rows["default"].installed and rows["default"].default and rows["default"].kind == "bundled"
    assert rows["default"].path == str(reg.REGISTRY_PATH.parent / "default")
    assert rows["tuned"].kind == "local" and rows["tuned"].licence == "CC-BY-4.0"
    assert reg.describe_s3(rows["tuned"].s3) == "K=5 q=0.1 zeroed=1"
    assert reg.describe_s3(None) == ""
    assert rows["dlib-shape-68"].kind == "package"


def test_registry_names_win_over_same_named_folders(tmp_path, home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dva").mkdir()  # a stray folder in the working directory
    registry = reg.load_registry(reg.REGISTRY_PATH)
    with pytest.raises(WeightsError, match="weight set 'dva' is not imported"):
        reg.resolve_weights("dva", registry)
    make_set(tmp_path / "other")
    assert reg.resolve_weights("other", registry) == Path("other")
    assert reg.resolve_weights("./other", registry) == Path("other")


def test_a_default_set_not_yet_shipped_says_what_to_pass(tmp_path):
    """A bundled default the registry names but the release does not ship yet: asking
    for it says so and what to pass instead, rather than 'reinstall'."""
    entry = {"kind": "bundled", "description": "d", "licence": "l", "folder": "default", "shipped": False,
             "files": [{"filename": "config.json", "sha256": None}], "notes": "null: not made yet"}
    registry = reg.load_registry(write_registry(tmp_path / "registry.json", {"default": entry}, "default"))
    with pytest.raises(WeightsError, match="is not shipped with this version of s3edit yet; pass --weights"):
        reg.resolve_weights(None, registry)
