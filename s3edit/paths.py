"""Safe file handling: atomic writes (an interrupted run never leaves a half file
under a final name), file modes that follow the user's umask, and output-path checks
(nothing the user had is overwritten unless they ask, and never an input).

Modes: ``tempfile`` makes files 0600 and folders 0700, and safetensors writes its files
0600, so whatever the tool writes gets the mode a new file or folder would get from
``cp`` or ``mkdir``: ``0o666 & ~umask`` for files, ``0o777 & ~umask`` for folders
(0644 and 0755 under umask 022) — see ``apply_umask``."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from s3edit.errors import InputError, OutputError

TMP_PREFIX = ".tmp-"  # atomic_path's temporary files: .tmp-<stem>-<8 random characters><suffix>
_TMP_NAME = re.compile(r"^\.tmp-(?P<stem>.+)-[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")
# Rust's io::Error as it appears in the messages of Rust-backed writers (safetensors):
# "I/O error: No space left on device (os error 28)".
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_naming(exc: BaseException, path: str | os.PathLike,
                    tmp: str | os.PathLike | None = None) -> OSError | None:
    """``exc`` as an OSError that names ``path``, for an error that names no file (or
    only the temporary file ``tmp`` written in its place): an OSError, or another
    exception that carries an OS error code only in its message (safetensors). None
    when ``exc`` is neither."""
    if isinstance(exc, OSError):
        unnamed = exc.filename is None or (tmp is not None and os.fsdecode(exc.filename) == os.fspath(tmp))
        if not unnamed or exc.errno is None:
            return None
        code = exc.errno
    else:
        found = _RUST_OS_ERROR.search(str(exc))
        if found is None:
            return None
        code = int(found.group(1))
    return OSError(code, os.strerror(code), os.fspath(path))


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask. Linux reports it in /proc/self/status (read-only, so no
    race); elsewhere it is read by setting it and putting it back, under a lock, and the
    value set meanwhile (0o077) only makes a file another thread creates in that instant
    more private, never less."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        old = os.umask(0o077)
        os.umask(old)
    return old


def apply_umask(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a new file (0o666) or folder (0o777) gets under the
    current umask, as ``cp`` and ``mkdir`` do."""
    base = 0o777 if stat.S_ISDIR(os.stat(path).st_mode) else 0o666
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` with the
    mode a new file gets under the umask (``apply_umask``).

    The temporary file keeps the final suffix (encoders pick formats by it). An OS
    error that names no file (a full disk while writing) is raised again naming
    ``path`` (``os_error_naming``), so the message can say which file could not be
    written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f"{TMP_PREFIX}{path.stem}-", suffix=suffix if suffix is not None else path.suffix,
            dir=path.parent,
        )
    except OSError as exc:  # named by the file the user asked for, not the temporary one
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            apply_umask(tmp_path)
            os.replace(tmp_path, path)
        except Exception as exc:
            named = os_error_naming(exc, path, tmp_path)
            if named is None:
                raise
            raise named from exc
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


# --- OS errors as one sentence ------------------------------------------------------------

# errno -> (what went wrong, what to do), for the OS errors a user's paths and disks cause.
_FREE_SPACE = "free some space or choose a folder on another disk, then rerun"
_OS_ERRORS = {
    errno.EACCES: ("permission denied", "choose a path you can {verb}, or change its permissions"),
    errno.EPERM: ("operation not permitted", "choose a path you can {verb}, or change its permissions"),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the device", _FREE_SPACE),
    errno.EDQUOT: ("the disk quota is exceeded", _FREE_SPACE),
    errno.EFBIG: ("the file is too large for its file system", "choose a folder on another disk"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.EEXIST: ("it already exists", "choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.ELOOP: ("too many symbolic links", "check the path"),
    errno.EIO: ("input/output error", "the disk or network share may be failing; check it and rerun"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`) and rerun"),
    errno.ENFILE: ("too many open files on the system", "close other programs and rerun"),
    errno.EXDEV: ("it is on another file system", "choose a folder on the same disk"),
}
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EEXIST, errno.EXDEV}


def final_name(filename: str) -> str:
    """The file an ``atomic_path`` temporary file was to become (a writer that reports
    the temporary name, such as FFmpeg's, is then named as the user named it); any
    other name as it is."""
    head, tail = os.path.split(filename)
    found = _TMP_NAME.match(tail)
    if found is None:
        return filename
    return os.path.join(head, found.group("stem") + (found.group("suffix") or ""))


def _verb(exc: OSError, verb: str | None) -> str:
    """'read' or 'write': given, else guessed from the error and whether the path exists
    and is readable (a missing path was being made; an unreadable one was being read)."""
    if verb:
        return verb
    if exc.errno in _WRITE_ERRNOS:
        return "write"
    if exc.errno in (errno.EACCES, errno.EPERM) and exc.filename is not None:
        path = os.fsdecode(exc.filename)
        return "read" if os.path.exists(path) and not os.access(path, os.R_OK) else "write"
    return "use"


def describe_os_error(exc: OSError, what: str | None = None, verb: str | None = None,
                      advice: str | None = None) -> str:
    """One sentence for an OS error on a user's path: which path (``what``, default the
    error's file name, quoted), what went wrong and what to do, e.g. "cannot write the
    job folder 'ro/job': permission denied; choose a folder you can write."

    ``verb`` ('read', 'write') is what the program was doing; left out, it is guessed.
    ``advice`` replaces the generic advice for permission errors (a caller that knows
    what the path is for can say what to choose instead)."""
    if exc.errno is None:  # raised by our own code with a message only
        return f"{str(exc).rstrip('.')}; check that the folder can be written and its disk has space, then rerun."
    verb = _verb(exc, verb)
    reason, generic = _OS_ERRORS.get(exc.errno, (None, "check the path and rerun"))
    reason = reason or (exc.strerror or type(exc).__name__).rstrip(".").lower()
    if what is None and exc.filename is not None:
        what = repr(final_name(os.fsdecode(exc.filename)))
    if advice is None or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = generic
    advice = advice.format(verb=verb)
    if what is None:
        return f"{reason}; {advice}."
    if exc.errno == errno.ENOENT:
        return f"{what} does not exist; {advice}."
    return f"cannot {verb} {what}: {reason}; {advice}."
