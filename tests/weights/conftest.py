"""Fixtures of the weights tests: an isolated, offline home and huggingface_hub cache,
and hub caches laid out on disk as huggingface_hub lays them out
(``models--org--name/{blobs,snapshots/<commit>,refs/main}``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """S3EDIT_HOME at tmp_path/home, the hub cache at tmp_path/hub, HF_HUB_OFFLINE=1.
    Returns tmp_path."""
    monkeypatch.setenv("S3EDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def hub_cache(offline) -> Callable[[str, dict[str, bytes]], Path]:
    """``populate(repo_id, files)`` lays ``files`` out in the test's hub cache as
    huggingface_hub does: content in blobs/, relative symlinks in snapshots/<commit>/,
    the commit hash in refs/main. It returns the snapshot folder."""

    def populate(repo_id: str, files: dict[str, bytes]) -> Path:
        repo = offline / "hub" / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / HUB_COMMIT
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(HUB_COMMIT)
        for name, data in files.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
        return snapshot

    return populate
