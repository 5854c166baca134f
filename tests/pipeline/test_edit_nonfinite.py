"""A decode that comes out non-finite stops the edit with one sentence, and nothing is
written from it: no crop, no change, no video; the batches decoded before it stay."""

from __future__ import annotations

import re

import pytest

from s3edit.errors import WeightsError
from s3edit.job import Job
from s3edit.model import ddim
from s3edit.pipeline import edit as ed
from s3edit.pipeline.options import run_options

STOPPED = re.compile(r"decoding frames (\d+)-(\d+) gave NaN or infinite values, so the edit stopped and nothing "
                     r"was written from them; ")


def poison_batch(monkeypatch, name: str, bad_batch: int) -> None:
    """Make the ``bad_batch``-th call (from 0) of ``ddim.<name>`` return NaN in one pixel."""
    real = getattr(ddim, name)
    calls = []

    def decode(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) - 1 == bad_batch:
            (out[0] if isinstance(out, tuple) else out)[0, 0, 0, 7] = float("nan")
        return out

    monkeypatch.setattr(ddim, name, decode)


def test_a_non_finite_decode_stops_a_whole_face_edit_and_writes_nothing_from_it(cli, encoded, monkeypatch, tmp_path):
    poison_batch(monkeypatch, "ddim_decode", bad_batch=1)
    result = cli("-q", "edit", str(encoded), "--attr", "Young=0.5", "--batch-size", "4", "--device", "cpu",
                 "-o", str(tmp_path / "out.mp4"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    found = STOPPED.search(result.stderr)
    assert found and result.stderr.startswith("error: decoding frames"), result.stderr
    assert result.stderr.endswith("check the weight set with `s3edit weights verify`.\n")  # fp32: no precision hint
    first, last = int(found.group(1)), int(found.group(2))
    name = next(p.name for p in (encoded / "edits").iterdir())
    done = Job.open(encoded).edit_frames_done(name)
    assert done and max(done) < first and not done & set(range(first, last + 1))
    assert not (tmp_path / "out.mp4").exists()


def test_a_non_finite_confined_decode_says_how_to_rerun_at_full_precision(encoded, monkeypatch):
    poison_batch(monkeypatch, "ddim_decode_in_region", bad_batch=0)
    run = run_options(job=Job.open(encoded), device="cpu", precision="bf16", batch_size=16)
    with pytest.raises(WeightsError) as info:
        ed.edit_job(encoded, [("Eyeglasses", 0.6)], run)
    assert STOPPED.match(str(info.value))
    assert str(info.value).endswith("rerun with --precision fp32, and check the weight set with "
                                    "`s3edit weights verify`.")
    assert not list((encoded / "edits").glob("*/change.*.safetensors"))
