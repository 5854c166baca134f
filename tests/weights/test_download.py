"""Hub downloads through the real ``hf_hub_download`` against hub caches the tests lay
out on disk (the ``hub_cache`` fixture), and sha256 refusal."""

from __future__ import annotations

import hashlib
import json

import pytest

from s3edit.errors import WeightsError
from s3edit.weights import download as dl
from s3edit.weights import registry as reg

REPO = "s3edit-test/tiny"
CONFIG_BYTES = b'{"format": "s3edit-weights", "version": 1}\n'
MODEL_BYTES = bytes(range(256)) * 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(offline):
    """Offline, isolated; a registry with one hub set ('tiny') and one import set ('dva')."""
    path = offline / "registry.json"
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
    return reg.load_registry(path), offline


def test_download_resolves_from_a_populated_cache(env, hub_cache):
    registry, _ = env
    snapshot = hub_cache(REPO, {"config.json": CONFIG_BYTES, "model.safetensors": MODEL_BYTES})
    folder = dl.download_weights("tiny", registry)
    assert folder == snapshot
    assert (folder / "model.safetensors").read_bytes() == MODEL_BYTES
    assert reg.resolve_weights("tiny", registry) == snapshot
    assert reg.resolve_weights(None, registry) == snapshot  # the default


def test_corrupt_cached_file_is_refused_and_deleted(env, hub_cache):
    registry, _ = env
    snapshot = hub_cache(REPO, {"config.json": CONFIG_BYTES, "model.safetensors": b"garbage"})
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
