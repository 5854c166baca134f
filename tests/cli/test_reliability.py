"""Nothing silently wrong, through the command line: damaged or non-finite weights are
refused by ``edit`` with one sentence and nothing written; what the tool writes gets
the umask's modes; a job folder that cannot be written says which and what to do;
without a terminal, progress prints plain lines."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from s3edit.weights.registry import REGISTRY_PATH

DEFAULT_SET = REGISTRY_PATH.parent / "default"
PROGRESS_LINE = re.compile(r"^align: detect  (\d+)/50 \((\d+)%\)  [\d.e+]+/s  (ETA \S+|done in \S+)$")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An isolated S3EDIT_HOME (the hash cache) for the module."""
    path = tmp_path_factory.mktemp("home")
    old = os.environ.get("S3EDIT_HOME")
    os.environ["S3EDIT_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("S3EDIT_HOME", None)
    else:
        os.environ["S3EDIT_HOME"] = old


@pytest.fixture(scope="module")
def aligned(tmp_path_factory, example_clip, home):
    """The example clip aligned at 64 px through the CLI under umask 022, output captured
    (CliRunner's stderr is not a terminal). Returns (result, job folder)."""
    from s3edit.cli.app import app

    job = tmp_path_factory.mktemp("jobs") / "astronaut.s3job"
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(app, ["align", str(example_clip), "-o", str(job), "--size", "64"],
                                    catch_exceptions=False)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    return result, job


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime: to show nothing changed."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_without_a_terminal_progress_prints_plain_lines(aligned):
    result, _ = aligned
    lines = [line for line in result.stderr.splitlines() if line.startswith("align: detect")]
    assert lines, result.stderr
    for line in lines:
        assert PROGRESS_LINE.match(line), line
    assert PROGRESS_LINE.match(lines[-1]).group(3).startswith("done in")
    assert lines[-1].startswith("align: detect  50/50 (100%)")
    done = [int(PROGRESS_LINE.match(line).group(1)) for line in lines]
    assert done == sorted(set(done))  # one line per step, counting up
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log


def test_quiet_silences_the_plain_lines(cli, aligned, tmp_path):
    _, job = aligned
    result = cli("-q", "paste", str(job), "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 0 and result.stderr == ""
    loud = cli("paste", str(job), "-o", str(tmp_path / "out2.mp4"))
    assert loud.exit_code == 0 and re.search(r"^paste  50/50 \(100%\)", loud.stderr, re.MULTILINE), loud.stderr


def test_job_files_and_the_pasted_video_get_the_umask_modes(cli, aligned, tmp_path):
    _, job = aligned
    assert mode(job) == 0o755 and mode(job / "manifest.json") == 0o644
    for path in job.rglob("*"):
        assert mode(path) == (0o755 if path.is_dir() else 0o644), path
    old = os.umask(0o022)
    try:
        result = cli("-q", "paste", str(job), "-o", str(tmp_path / "out.mp4"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert mode(tmp_path / "out.mp4") == 0o644
    old = os.umask(0o077)
    try:
        assert cli("-q", "paste", str(job), "-o", str(tmp_path / "private.mp4")).exit_code == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / "private.mp4") == 0o600  # the umask, whatever it is


def copy_default(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEFAULT_SET, tmp_path / "weights-copy"))


def edit_with(cli, job: Path, weights: Path, out: Path):
    return cli("edit", str(job), "--attr", "Eyeglasses", "--scale", "0.6", "--steps", "2",
               "--weights", str(weights), "-o", str(out))


def test_edit_refuses_a_flipped_byte_and_writes_nothing(cli, aligned, tmp_path):
    _, job = aligned
    weights = copy_default(tmp_path)
    path = weights / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    before, weights_before = snapshot(job), snapshot(weights)
    result = edit_with(cli, job, weights, tmp_path / "out.mp4")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: weight file {str(path)!r} does not match its sha256 in checksums.json, so it is damaged or "
        "was changed after the set was written; get the set again (re-download, re-import or re-export it), "
        "and `s3edit weights verify` checks a whole set.\n")
    assert snapshot(job) == before and snapshot(weights) == weights_before
    assert not (tmp_path / "out.mp4").exists()
    verify = cli("weights", "verify", str(weights))
    assert verify.exit_code == 1 and "does not match the one in checksums.json" in verify.stdout


def test_edit_refuses_nan_weights_naming_the_tensor(cli, aligned, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from s3edit.weights.hashing import write_checksums

    _, job = aligned
    weights = copy_default(tmp_path)
    state = load_file(str(weights / "model.safetensors"))
    key = "out.2.weight" if "out.2.weight" in state else min(state)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(weights / "model.safetensors"))
    write_checksums(weights, ["model.safetensors", "classifier.safetensors"])  # the files are intact; the values are not
    before = snapshot(job)
    result = edit_with(cli, job, weights, tmp_path / "out.mp4")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: tensor {key!r} of {str(weights / 'model.safetensors')!r} holds NaN "
                                    "or infinite values")
    assert result.stderr.count("\n") == 1 and snapshot(job) == before and not (tmp_path / "out.mp4").exists()
    verify = cli("weights", "verify", str(weights))
    assert verify.exit_code == 1 and f"1 tensor(s) hold NaN or inf: model.{key}" in verify.stdout


def test_a_job_folder_that_cannot_be_written_says_which_and_what_to_do(cli, example_clip, tmp_path, monkeypatch):
    """A read-only parent. Root ignores permission bits, so there the refusal the kernel
    would give is made by Path.mkdir; otherwise the folder really is read-only."""
    ro = tmp_path / "ro"
    ro.mkdir()
    job = ro / "job"
    if os.geteuid() == 0:
        real_mkdir = pathlib.Path.mkdir

        def refuse(self, *args, **kwargs):
            if Path(self) == job:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    else:
        ro.chmod(0o555)
    try:
        result = cli("align", str(example_clip), "-o", str(job))
    finally:
        ro.chmod(0o755)
    assert result.exit_code == 1
    assert result.stderr == (f"error: cannot write the job folder {str(job)!r}: permission denied; "
                             "choose a folder you can write.\n")
    assert not job.exists()


def test_a_full_disk_while_writing_the_manifest_names_the_job(cli, example_clip, tmp_path, monkeypatch):
    from s3edit import paths

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths, "write_bytes_atomic", full)
    job = tmp_path / "job"
    result = cli("align", str(example_clip), "-o", str(job))
    assert result.exit_code == 1
    assert result.stderr == (f"error: cannot write the job folder {str(job)!r}: no space left on the device; "
                             "free some space or choose a folder on another disk, then rerun.\n")
    assert not job.exists()  # the folder it had just made is removed again


def test_plain_progress_lines_rate_eta_and_a_resumed_start():
    """Lines every PLAIN_STEP percent, at most one per PLAIN_MIN_S; a resumed stage's
    skipped count is left out of the rate; a stage of unknown length prints a count."""
    import io

    from s3edit.console import PlainProgress

    now = [0.0]
    out = io.StringIO()
    bar = PlainProgress("encode: DDIM inversion", 1000, clock=lambda: now[0], stream=out)
    bar.advance(500)  # done by an earlier run, counted at once
    for _ in range(50):
        now[0] += 1.0
        bar.advance(10)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["encode: DDIM inversion  510/1000 (51%)  10/s  ETA 49s",  # where it resumed
                         "encode: DDIM inversion  550/1000 (55%)  10/s  ETA 45s"]
    assert lines[-1] == "encode: DDIM inversion  1000/1000 (100%)  10/s  done in 50s"
    assert len(lines) == 11

    out = io.StringIO()
    fast = PlainProgress("paste", 100, clock=lambda: now[0], stream=out)
    for _ in range(100):
        now[0] += 1 / 64  # exact in binary
        fast.advance(1)
    fast.finish()
    assert out.getvalue().splitlines() == ["paste  64/100 (64%)  64/s  ETA 1s", "paste  100/100 (100%)  64/s  done in 2s"]

    out = io.StringIO()
    unknown = PlainProgress("align: detect", None, clock=lambda: now[0], stream=out)
    for _ in range(70):
        now[0] += 1.0
        unknown.advance(1)
    unknown.finish()
    assert out.getvalue().splitlines() == ["align: detect  30  1/s", "align: detect  60  1/s",
                                           "align: detect  70  1/s"]
