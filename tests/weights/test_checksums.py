"""A weight set's own checksums (checksums.json, written by every writer of a set) and
what loading makes of them: sizes and headers always, the sha256 once per change of a
file (cached under $S3EDIT_HOME), non-finite tensors refused by name; and the modes of
what is written, which follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from s3edit.errors import OutputError, WeightsError
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.weights import hashing
from s3edit.weights.hashing import CHECKSUMS_FILE, sha256_file
from s3edit.weights.weightset import (
    load_weight_set,
    save_weight_set,
    write_weight_set_files,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_dva(preset("tiny-32-dlib")).eval()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("S3EDIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def saved(model, tmp_path, home) -> Path:
    return save_weight_set(tmp_path / "set", model, meta={"name": "t"}, dtype=torch.float16)


@pytest.fixture
def count_hashes(monkeypatch) -> list[str]:
    """Names of the files hashed from disk while the test runs."""
    seen: list[str] = []
    real = hashing.sha256_file

    def counting(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return seen


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tensor_data_offset(path: Path) -> int:
    """Where the tensors' bytes start in a safetensors file (after its JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_every_written_set_records_size_and_sha256_of_its_tensor_files(saved):
    data = json.loads((saved / CHECKSUMS_FILE).read_text())
    assert data["format"] == "s3edit-checksums" and data["version"] == 1
    assert list(data["files"]) == ["model.safetensors"]  # config.json is not covered
    recorded = data["files"]["model.safetensors"]
    path = saved / "model.safetensors"
    assert recorded == {"size": path.stat().st_size, "sha256": sha256_file(path)}


def test_a_flipped_byte_anywhere_in_the_tensors_is_refused(saved, tmp_path):
    path = saved / "model.safetensors"
    size = path.stat().st_size
    for offset in (tensor_data_offset(path), size // 2, size - 1):
        copy = Path(shutil.copytree(saved, tmp_path / f"flip{offset}"))
        flip_byte(copy / "model.safetensors", offset)
        with pytest.raises(WeightsError) as info:
            load_weight_set(copy)
        message = str(info.value)
        assert message == (
            f"weight file {str(copy / 'model.safetensors')!r} does not match its sha256 in checksums.json, so it "
            "is damaged or was changed after the set was written; get the set again (re-download, re-import "
            "or re-export it), and `s3edit weights verify` checks a whole set.")


def test_sizes_and_headers_are_checked_before_any_hashing(saved, count_hashes):
    path = saved / "model.safetensors"
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(WeightsError, match=r"model.safetensors' is \d+ bytes where checksums.json records \d+"):
        load_weight_set(saved)
    assert count_hashes == []


def test_the_sha256_is_computed_once_per_change_of_a_file(saved, home, count_hashes):
    load_weight_set(saved)
    assert count_hashes == []  # the writer remembered what it had just hashed
    assert (home / "cache" / "sha256.json").is_file()
    path = saved / "model.safetensors"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a rewrite changes mtime
    load_weight_set(saved)
    assert count_hashes == ["model.safetensors"]
    load_weight_set(saved)
    assert count_hashes == ["model.safetensors"]
    shutil.rmtree(home / "cache")  # the cache deleted: hashed once more
    load_weight_set(saved)
    load_weight_set(saved)
    assert count_hashes == ["model.safetensors"] * 2
    shutil.rmtree(home / "cache")
    (home / "cache").write_text("")  # a cache that cannot be written: every load hashes, none fails
    load_weight_set(saved)
    load_weight_set(saved)
    assert count_hashes == ["model.safetensors"] * 4


def test_an_unreadable_cache_is_ignored(saved, home):
    (home / "cache" / "sha256.json").write_text("{not json")
    load_weight_set(saved)
    flip_byte(saved / "model.safetensors", (saved / "model.safetensors").stat().st_size // 2)
    with pytest.raises(WeightsError, match="does not match its sha256"):
        load_weight_set(saved)


def test_tensor_files_missing_from_or_unknown_to_the_checksums(saved, model):
    shutil.copyfile(saved / "model.safetensors", saved / "s3.safetensors")
    with pytest.raises(WeightsError, match="s3.safetensors' is not recorded in checksums.json"):
        load_weight_set(saved)
    (saved / "s3.safetensors").unlink()
    (saved / "model.safetensors").rename(saved / "elsewhere")
    with pytest.raises(WeightsError, match="has no model.safetensors"):
        load_weight_set(saved)
    (saved / "elsewhere").rename(saved / "model.safetensors")
    (saved / CHECKSUMS_FILE).write_text('{"format": "s3edit-checksums", "version": 1, "files": {"../x": 1}}')
    with pytest.raises(WeightsError, match="checksums.json' is damaged, so the set's files cannot be checked"):
        load_weight_set(saved)


def test_a_set_without_checksums_loads_with_its_headers_checked(saved):
    (saved / CHECKSUMS_FILE).unlink()
    assert load_weight_set(saved).name == "t"
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        load_weight_set(saved)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused_by_name(model, tmp_path, home, value):
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key].view(-1)[1] = value
    folder = tmp_path / "bad"
    write_weight_set_files(folder, json.loads(json.dumps(_config(model))), state, None)
    with pytest.raises(WeightsError) as info:
        load_weight_set(folder)
    assert str(info.value) == (
        f"tensor {key!r} of {str(folder / 'model.safetensors')!r} holds NaN or infinite values (the file is "
        "damaged or its training diverged); get the set again (re-download, re-import or re-export it), or "
        "retrain it.")


def _config(model) -> dict:
    from s3edit.weights.weightset import config_json

    return config_json(model.config, {"name": "bad"}, [])


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_a_saved_set_gets_the_modes_of_the_umask(model, tmp_path, home, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        folder = save_weight_set(tmp_path / "set", model, meta={"name": "t"}, dtype=torch.float16)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == dir_mode
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path.name


def test_a_failed_write_names_the_set_and_leaves_nothing(model, tmp_path, home, monkeypatch):
    from s3edit.weights import weightset

    def full_disk(tensors, filename, metadata=None):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(weightset, "save_file", full_disk)
    with pytest.raises(OutputError) as info:
        save_weight_set(tmp_path / "set", model)
    assert str(info.value) == (
        f"cannot write the weight-set folder {str(tmp_path / 'set')!r}: no space left on the device; free "
        "some space or choose a folder on another disk, then rerun.")
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []  # no temporary folder left


def test_a_sum_that_overflows_is_not_taken_for_a_non_finite_tensor():
    from s3edit.weights.weightset import nonfinite_tensors

    big = torch.full((100,), 60000.0, dtype=torch.float16)  # finite; its float16 sum is inf
    assert not torch.isfinite(big.sum())
    nan, inf = big.clone(), big.clone()
    nan[3], inf[4] = float("nan"), float("-inf")
    assert nonfinite_tensors({"big": big, "nan": nan, "inf": inf, "index": torch.arange(3)}) == ["nan", "inf"]
