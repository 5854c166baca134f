"""The commands a user runs, on real footage: the first 16 frames of
../shared/clips/talk_man_short_2s.mp4 (a man talking, 640x360, 30 fps, with audio) go
through ``s3edit align``, ``encode``, ``edit`` and ``paste``, and ``s3edit tune`` trains
on them, with the small random weight set of tests/pipeline/conftest.py.

Everything runs through the CLI; the 16-frame excerpt is cut losslessly first (it is the
source the outputs are compared with)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from s3edit.video.io import iter_frames, probe, write_excerpt
from s3edit.weights.weightset import load_weight_set

# one torch thread: the tiny UNet's small batches decode 2.5x faster on a busy 2-core machine
pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

CLIP = "talk_man_short_2s.mp4"
FRAMES = 16
STEPS = 4  # DDIM steps: the random model needs no more to exercise every stage
CORNER = 48  # side of the background squares compared at the frame corners, pixels
MIN_PSNR = 38.0  # dB, each corner square of each frame against the source (measured >= 42.8 at crf 16)


def s3edit(*args: str) -> dict:
    """Run ``s3edit ARGS --json``, check it succeeded and return its JSON summary."""
    from s3edit.cli.app import app

    result = CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def frames_of(path: Path) -> np.ndarray:
    """Every frame of a video, (N, H, W, 3) RGB as int (differences stay signed)."""
    return np.stack([f.image for f in iter_frames(path)]).astype(int)


def corners(frames: np.ndarray) -> np.ndarray:
    """The four CORNER x CORNER squares at the frame corners (background in this clip)."""
    c = CORNER
    return np.stack([frames[:, :c, :c], frames[:, :c, -c:], frames[:, -c:, :c], frames[:, -c:, -c:]])


def corner_psnrs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each corner square of each frame, (4, N)."""
    mse = ((corners(a) - corners(b)) ** 2).mean(axis=(2, 3, 4))
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


@pytest.fixture(scope="module")
def excerpt(shared_clips, tmp_path_factory) -> Path:
    """The first FRAMES frames of CLIP and the audio under them, losslessly."""
    info = write_excerpt(shared_clips / CLIP, tmp_path_factory.mktemp("clip") / "talk16.mp4", stop=FRAMES)
    assert info.n_frames == FRAMES
    return info.path


@pytest.fixture(scope="module")
def aligned_master(excerpt, tiny, tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("jobs") / "talk16.s3job"
    summary = s3edit("align", str(excerpt), "-o", str(job), "--size", str(tiny.crop_size))
    assert summary["frames"] == FRAMES, summary
    return job


@pytest.fixture
def aligned(aligned_master, tmp_path) -> Path:
    return Path(shutil.copytree(aligned_master, tmp_path / "talk16.s3job"))


def test_encode_edit_paste_keeps_all_but_the_face(aligned, excerpt, small_weights, tmp_path):
    encoded = s3edit("encode", str(aligned), "--weights", str(small_weights), "--steps", str(STEPS),
                     "--batch-size", "8", "--device", "cpu")
    assert encoded["params"]["steps"] == STEPS and encoded["frames"] >= FRAMES - 2  # a face in (nearly) every frame
    glasses, zero = tmp_path / "glasses.mp4", tmp_path / "zero.mp4"
    edited = s3edit("edit", str(aligned), "--attr", "Eyeglasses=0.6", "-o", str(glasses), "--device", "cpu")
    assert edited["edit"] == f"Eyeglasses+0.6__s{STEPS}"
    s3edit("edit", str(aligned), "--attr", "Eyeglasses=0", "-o", str(zero), "--device", "cpu")
    pasted = tmp_path / "pasted.mp4"
    s3edit("paste", str(aligned), "--edit", edited["edit"], "-o", str(pasted))

    src = probe(excerpt)
    assert src.has_audio  # the check below means something
    for out in (glasses, zero, pasted):
        info = probe(out)
        assert info.n_frames == src.n_frames == FRAMES, out.name
        assert (info.width, info.height) == (src.width, src.height) and math.isclose(info.fps, src.fps)
        assert info.has_audio == src.has_audio, out.name

    source, ours = frames_of(excerpt), {out.name: frames_of(out) for out in (glasses, zero, pasted)}
    # outside the face every frame is the source's, but for the H.264 re-encode
    for name, frames in ours.items():
        assert corner_psnrs(frames, source).min() >= MIN_PSNR, name
    # scale 0 decodes the random model's reconstruction into the face: where it differs
    # from the source is the pasted face (away from the corners)
    face = np.abs(ours["zero.mp4"] - source).mean(axis=(0, 3)) > 20  # (H, W)
    assert 0.05 < face.mean() < 0.5 and not corners(face[None, ..., None]).any()
    # there the Eyeglasses=0.6 video differs from the scale-0 one in every frame: its
    # edit (region auto) adds what the attribute changed to the original face
    in_face = np.abs(ours["glasses.mp4"] - ours["zero.mp4"]).mean(axis=3)[:, face].mean(axis=1)  # (N,)
    assert in_face.min() > 20, in_face
    # `s3edit paste --edit` writes the video `s3edit edit -o` wrote
    assert np.abs(ours["pasted.mp4"] - ours["glasses.mp4"]).max() <= 2


def test_tune_on_real_footage_writes_a_loadable_weight_set(aligned, small_weights, tmp_path):
    out = tmp_path / "tuned"
    report = s3edit("tune", str(aligned), "--from", str(small_weights), "-o", str(out), "--steps", "4",
                    "--batch-size", "4", "--lr", "1e-3")
    assert report["objective"] == "s3" and report["steps"] == 4 and report["frames"] >= FRAMES - 2
    for when in ("before", "after"):
        assert math.isfinite(report[when]["loss"]) and report[when]["loss"] > 0, report[when]
    weights = load_weight_set(out)
    assert weights.meta["source"]["objective"] == "s3"
    assert weights.meta["source"]["frames"] == report["frames"]
    assert weights.classifier is not None and weights.meta["s3"]["K"] == 5
