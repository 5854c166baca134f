"""sha256 of weight files, shared by hub downloads (``download``), the import of
published checkpoints (``importer``), ``verify`` and the weight-set folder
(``weightset``): a set's own checksums file, and the cache that lets a load hash each
file once per change instead of on every run.

The checksums file, ``checksums.json`` beside the tensors (format in
``s3edit.weights.weightset`` and docs/weights.md)::

    {"format": "s3edit-checksums", "version": 1,
     "files": {"model.safetensors": {"size": 12345, "sha256": "9f86d0..."}, ...}}

The hash cache, ``$S3EDIT_HOME/cache/sha256.json``, maps a file's absolute path to the
(size, mtime_ns, inode) it had when it was hashed and its sha256. A file whose size,
mtime or inode changed since is hashed again; rewriting a file in place (a flipped
byte, a new download, ``cp``) changes its mtime. The cache is an optimisation only: when
it cannot be read or written the files are simply hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from s3edit import console
from s3edit.errors import WeightsError
from s3edit.paths import write_json_atomic
from s3edit.weights.registry import s3edit_home

HASH_CHUNK = 1 << 20  # 1 MiB reads: streamed hashing, memory independent of file size
HASH_PROGRESS_MIN = 64 << 20  # files above 64 MiB get a progress bar while hashed

CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_FORMAT = "s3edit-checksums"
CHECKSUMS_VERSION = 1
CACHE_FILE = "sha256.json"  # under s3edit_home() / "cache"
CACHE_FORMAT = "s3edit-sha256-cache"
CACHE_ENTRIES = 512  # the most recently hashed files are kept


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


# --- a weight set's own checksums -----------------------------------------------------------


@dataclass(frozen=True)
class FileSum:
    """What checksums.json records for one file."""

    size: int
    sha256: str


def write_checksums(folder: str | os.PathLike, names: list[str]) -> dict[str, FileSum]:
    """Hash the files ``names`` of ``folder`` and record them in its checksums.json."""
    folder = Path(folder)
    sums = {name: FileSum((folder / name).stat().st_size, sha256_file(folder / name)) for name in sorted(names)}
    write_json_atomic(folder / CHECKSUMS_FILE, {
        "format": CHECKSUMS_FORMAT, "version": CHECKSUMS_VERSION,
        "files": {name: {"size": s.size, "sha256": s.sha256} for name, s in sums.items()},
    })
    return sums


def read_checksums(folder: str | os.PathLike) -> dict[str, FileSum] | None:
    """The checksums.json of ``folder`` (None where it has none); a damaged one is a
    WeightsError."""
    path = Path(folder) / CHECKSUMS_FILE
    if not path.is_file():
        return None
    damaged = (f"{str(path)!r} is damaged, so the set's files cannot be checked; get the set again "
               "(re-download, re-import or re-export it).")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CHECKSUMS_FORMAT or data.get("version") != CHECKSUMS_VERSION:
            raise ValueError("not a version-1 checksums file")
        sums = {str(name): FileSum(int(f["size"]), str(f["sha256"]).lower()) for name, f in data["files"].items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(damaged) from exc
    if any(Path(name).name != name for name in sums):  # a name with a folder in it: not ours
        raise WeightsError(damaged)
    return sums


def damaged_message(path: Path, detail: str) -> str:
    """One sentence for a weight file that does not match its checksums.json."""
    return (f"weight file {str(path)!r} {detail}, so it is damaged or was changed after the set was "
            "written; get the set again (re-download, re-import or re-export it), and "
            "`s3edit weights verify` checks a whole set.")


def check_sizes(folder: Path, sums: dict[str, FileSum], present: list[str]) -> None:
    """Every file in checksums.json exists with its recorded size, and each of the
    tensor files ``present`` (which the loader will read) is recorded there."""
    for name in present:
        if name not in sums:
            raise WeightsError(damaged_message(folder / name, f"is not recorded in {CHECKSUMS_FILE}"))
    for name, s in sums.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(damaged_message(path, f"is missing ({CHECKSUMS_FILE} records it)"))
        size = path.stat().st_size
        if size != s.size:
            raise WeightsError(damaged_message(path, f"is {size} bytes where {CHECKSUMS_FILE} records {s.size}"))


def check_sha256(folder: Path, sums: dict[str, FileSum], *, cached: bool = True) -> dict[str, str]:
    """The sha256 of every file in checksums.json, against the recorded one. With
    ``cached``, a file unchanged since it was last hashed (cache above) is not read
    again. A mismatch is a WeightsError; returns name -> actual sha256."""
    actual = {}
    for name, s in sums.items():
        path = folder / name
        digest = cached_sha256(path) if cached else None
        if digest is None:
            digest = sha256_file(path)
        if digest != s.sha256:
            raise WeightsError(damaged_message(path, f"does not match its sha256 in {CHECKSUMS_FILE}"))
        remember_sha256(path, digest)
        actual[name] = digest
    return actual


# --- the hash cache -------------------------------------------------------------------------


def _cache_path() -> Path:
    return s3edit_home() / "cache" / CACHE_FILE


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _read_cache() -> dict[str, list]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def cached_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 the cache holds for ``path`` if the file is unchanged since, else None."""
    path = Path(path).resolve()
    entry = _read_cache().get(str(path))
    try:
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == _stamp(path):
            return str(entry[3])
    except OSError:
        pass
    return None


def remember_sha256(path: str | os.PathLike, digest: str) -> None:
    """Record ``digest`` as the sha256 of ``path`` as it is now (best effort: a cache
    that cannot be written is left alone)."""
    path = Path(path).resolve()
    try:
        stamp = _stamp(path)
        files = _read_cache()
        if files.get(str(path)) == [*stamp, digest]:
            return
        files.pop(str(path), None)
        files[str(path)] = [*stamp, digest]
        kept = {k: v for k, v in files.items() if os.path.exists(k)}
        kept = dict(list(kept.items())[-CACHE_ENTRIES:])
        write_json_atomic(_cache_path(), {"format": CACHE_FORMAT, "version": 1, "files": kept})
    except OSError:
        pass
