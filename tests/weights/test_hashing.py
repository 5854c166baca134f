"""``sha256_file``: streamed, with and without the progress bar, equal to hashlib's."""

from __future__ import annotations

import hashlib

from s3edit.weights import hashing

DATA = bytes(range(256)) * 64 * 5


def test_sha256_file_streams_and_matches_hashlib(tmp_path, monkeypatch):
    f = tmp_path / "f.bin"
    f.write_bytes(DATA)
    assert hashing.sha256_file(f) == hashlib.sha256(DATA).hexdigest()
    monkeypatch.setattr(hashing, "HASH_PROGRESS_MIN", 1)  # the progress-bar path
    monkeypatch.setattr(hashing, "HASH_CHUNK", 1000)
    assert hashing.sha256_file(f) == hashlib.sha256(DATA).hexdigest()
