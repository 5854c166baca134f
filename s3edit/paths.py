"""Safe file handling: atomic writes (an interrupted run never leaves a half file
under a final name) and output-path checks (nothing the user had is overwritten
unless they ask, and never an input)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from s3edit.errors import InputError, OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The temporary file keeps the final suffix (encoders pick formats by it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".tmp-{path.stem}-", suffix=suffix if suffix is not None else path.suffix,
        dir=path.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def require_input_file(path: str | os.PathLike, what: str = "input") -> Path:
    """An existing, readable regular file, or one clear error."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    if path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a directory, not a file.")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {str(path)!r} is not readable.")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse an output that is an input, that exists (unless ``overwrite``), or
    whose folder cannot be written. Returns the output as a Path."""
    out = Path(out)
    for src in inputs:
        src = Path(src)
        if out.resolve() == src.resolve() or _same_file(out, src):
            raise OutputError(f"output {str(out)!r} is the input file; choose another output path.")
    if out.is_dir():
        raise OutputError(f"output {str(out)!r} is a directory; give a file name.")
    if out.exists() and not overwrite:
        raise OutputError(f"output {str(out)!r} already exists; pass --overwrite to replace it.")
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise OutputError(f"cannot write {str(out)!r}: folder {str(probe)!r} is not writable.")
    return out
