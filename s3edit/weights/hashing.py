"""sha256 of weight files, shared by hub downloads (``download``), the import of
published checkpoints (``importer``) and ``verify``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from s3edit import console

HASH_CHUNK = 1 << 20  # 1 MiB reads: streamed hashing, memory independent of file size
HASH_PROGRESS_MIN = 64 << 20  # files above 64 MiB get a progress bar while hashed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (a progress bar for large files)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size < HASH_PROGRESS_MIN:
            for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
                digest.update(chunk)
        else:
            with console.progress(f"sha256 {path.name}", total=(size + HASH_CHUNK - 1) // HASH_CHUNK) as advance:
                for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
                    digest.update(chunk)
                    advance(1)
    return digest.hexdigest()
