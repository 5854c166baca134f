"""Paste stage: the round trip gives the source back (>= 40 dB, same frames, rate, size,
audio), edits land only inside the face, frames without a face pass through
bit-identical, rotation is honoured, and every user error is one clear sentence."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from s3edit import console
from s3edit.errors import OutputError
from s3edit.job import Job
from s3edit.pipeline.align import align_video
from s3edit.face.mask import face_mask
from s3edit.pipeline.paste import (
    DEFAULT_BLEND,
    PasteConfig,
    coded_to_display,
    footprint,
    paste_video,
    warp_into,
)
from s3edit.video.io import VideoWriter, iter_frames, probe, yuv_planes

MIN_PSNR = 40.0  # the paste round trip reaches 40 dB over the whole frame


@pytest.fixture(autouse=True)
def _quiet():
    console.set_quiet(True)
    yield
    console.set_quiet(False)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def frame_psnrs(src: Path, out: Path) -> list[float]:
    return [psnr(a.image, b.image) for a, b in zip(iter_frames(src), iter_frames(out))]


def same_planes(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(yuv_planes(a.av_frame), yuv_planes(b.av_frame)))


def audio_payloads(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size > 0]


@pytest.fixture(scope="module")
def example_job(example_clip, tmp_path_factory) -> Job:
    console.set_quiet(True)
    return align_video(example_clip, tmp_path_factory.mktemp("paste") / "astro.job")


def copy_job(job: Job, dst: Path) -> Job:
    shutil.copytree(job.root, dst)
    return Job.open(dst)


# --- the round trip ------------------------------------------------------------------


@pytest.mark.parametrize("blend", ["detail", "replace"])
def test_round_trip_example_clip(example_job, example_clip, tmp_path, blend):
    assert DEFAULT_BLEND == "detail"
    out = tmp_path / "out.mp4"
    result = paste_video(example_job, out, PasteConfig(blend=blend))  # default crf
    assert (result.n_frames, result.n_pasted, result.n_passed) == (50, 50, 0)
    src, got = probe(example_clip), probe(out)
    assert (got.n_frames, got.fps, got.width, got.height) == (src.n_frames, src.fps, src.width, src.height)
    assert got.has_audio and audio_payloads(out) == audio_payloads(example_clip)
    values = frame_psnrs(example_clip, out)
    assert len(values) == 50 and min(values) >= MIN_PSNR, min(values)
    entry = Job.open(example_job.root).stage("paste")
    assert entry["done"] and entry["output"] == str(out.resolve()) and entry["frames_pasted"] == 50


def test_detail_round_trip_is_exact_at_crf0(example_job, example_clip, tmp_path):
    out = tmp_path / "out.mp4"
    paste_video(example_job, out, PasteConfig(blend="detail", crf=0, max_frames=10))
    assert probe(out).n_frames == 10
    assert all(same_planes(a, b) for a, b in zip(iter_frames(example_clip, stop=10), iter_frames(out)))


def frame_mask(job: Job, index: int, width: int, height: int) -> np.ndarray:
    """The paste mask of frame ``index`` in frame pixels (unrotated source)."""
    arrays = load_file(job.track_path)
    transform = arrays["transforms"][index].astype(np.float64)
    size = cv2.imread(str(job.crop_path(index))).shape[0]
    mask = face_mask(arrays["crop_landmarks"][index: index + 1], size)[0]
    out = np.zeros((height, width), np.float32)
    box = footprint(transform, size, width, height)
    out[box[1]: box[3], box[0]: box[2]] = warp_into(mask, transform, box, cv2.INTER_LINEAR,
                                                    cv2.BORDER_CONSTANT)
    return out


def test_replace_round_trip_changes_only_the_face(example_job, example_clip, tmp_path):
    out = tmp_path / "out.mp4"
    paste_video(example_job, out, PasteConfig(blend="replace", crf=0, max_frames=5))
    for a, b in zip(iter_frames(example_clip), iter_frames(out)):
        (ya, *_), (yb, *_) = yuv_planes(a.av_frame), yuv_planes(b.av_frame)
        changed = ya != yb
        inside = frame_mask(example_job, a.index, 384, 384) > 0
        assert changed.any() and inside.mean() < 0.6
        assert not (changed & ~inside).any()  # outside the mask: exact decoded values
        assert psnr(a.image, b.image) > 45


# --- edits -----------------------------------------------------------------------------


def make_edit(job: Job, name: str, change) -> None:
    crops = job.edit_dir(name) / "crops"
    crops.mkdir(parents=True)
    for path in sorted(job.crops_dir.glob("*.png")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        cv2.imwrite(str(crops / path.name), cv2.cvtColor(change(rgb), cv2.COLOR_RGB2BGR))


def face_box(job: Job, index: int) -> tuple[slice, slice]:
    """A box around the nose, in frame pixels (well inside the mask)."""
    lm = load_file(job.track_path)["landmarks"][index]
    x, y = lm[30]
    return slice(int(y) - 10, int(y) + 10), slice(int(x) - 10, int(x) + 10)


@pytest.mark.parametrize("blend", ["replace", "detail"])
def test_edit_lands_inside_the_face(example_job, example_clip, tmp_path, blend):
    job = copy_job(example_job, tmp_path / "job")
    make_edit(job, "brighter", lambda rgb: np.clip(rgb.astype(int) + 40, 0, 255).astype(np.uint8))
    out = tmp_path / "out.mp4"
    paste_video(job, out, PasteConfig(edit="brighter", blend=blend, crf=0, max_frames=3))
    for a, b in zip(iter_frames(example_clip), iter_frames(out)):
        rows, cols = face_box(job, a.index)
        lift = b.image[rows, cols].astype(float).mean() - a.image[rows, cols].astype(float).mean()
        assert 25 < lift < 45, lift
        outside = frame_mask(job, a.index, 384, 384) == 0
        assert np.array_equal(yuv_planes(a.av_frame)[0][outside], yuv_planes(b.av_frame)[0][outside])


def test_unknown_edit(example_job, tmp_path):
    from s3edit.errors import JobError

    with pytest.raises(JobError, match="has no edit named 'nope'"):
        paste_video(example_job, tmp_path / "o.mp4", PasteConfig(edit="nope"))


# --- frames without a face -----------------------------------------------------------


def test_invalid_frames_pass_through_bit_exact(example_job, example_clip, tmp_path):
    job = copy_job(example_job, tmp_path / "job")
    arrays = load_file(job.track_path)
    arrays["valid"][3:7] = 0
    save_file(arrays, str(job.track_path))
    out = tmp_path / "out.mp4"
    result = paste_video(job, out, PasteConfig(blend="replace", crf=0, max_frames=10))
    assert (result.n_pasted, result.n_passed) == (6, 4)
    for a, b in zip(iter_frames(example_clip), iter_frames(out)):
        assert same_planes(a, b) == (3 <= a.index < 7), a.index


# --- rotation --------------------------------------------------------------------------


def test_coded_to_display_matches_rot90():
    h, w = 3, 5
    coded = np.arange(h * w).reshape(h, w)
    for rotation in (0, 90, 180, 270):
        display = np.rot90(coded, rotation // 90)
        m = coded_to_display(rotation, w, h)
        for yc in range(h):
            for xc in range(w):
                xd, yd, _ = m @ [xc, yc, 1]
                assert display[int(round(yd)), int(round(xd))] == coded[yc, xc]


def test_rotated_source_round_trip(example_clip, tmp_path):
    """A portrait clip stored sideways with a 90 degree display matrix."""
    info = probe(example_clip)
    like = dataclasses.replace(info, width=320, height=384, rotation=90)
    src = tmp_path / "rotated.mp4"
    with VideoWriter(src, like, crf=0, audio_from=example_clip, trim_audio=True) as writer:
        for frame in iter_frames(example_clip, stop=8):
            writer.write(np.ascontiguousarray(frame.image[:, 32:352]), frame.pts)
    rotated = probe(src)
    assert rotated.rotation == 90 and (rotated.width, rotated.height) == (320, 384)
    job = align_video(src, tmp_path / "job")
    out = tmp_path / "out.mp4"
    paste_video(job, out, PasteConfig(crf=0))  # lossless: only the geometry is judged
    got = probe(out)
    assert got.rotation == 90 and (got.width, got.height) == (320, 384)
    values = frame_psnrs(src, out)
    assert len(values) == 8 and min(values) >= 50, values  # ~58 dB; a wrong turn: < 25


# --- user errors (library and CLI) -----------------------------------------------------


def assert_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, (result.exit_code, result.stdout)
    assert result.stderr.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_round_trip_json(cli, example_job, tmp_path):
    out = tmp_path / "o.mp4"
    result = cli("paste", str(example_job.root), "-o", str(out), "--json", "--crf", "23",
                 "--dilate", "4", "--feather", "6", "--blend", "replace")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_frames"] == 50 and summary["output"] == str(out) and out.is_file()
    params = Job.open(example_job.root).stage("paste")["params"]
    assert params["crf"] == 23 and params["blend"] == "replace" and params["mask"] == {"dilate": 4, "feather": 6}


def test_cli_output_is_the_source(cli, example_job, example_clip):
    assert_error(cli("paste", str(example_job.root), "-o", str(example_clip)), "is the input file")


def test_cli_existing_output_needs_overwrite(cli, example_job, tmp_path):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    assert_error(cli("paste", str(example_job.root), "-o", str(out)),
                 "already exists; pass --overwrite")
    assert out.read_bytes() == b"precious"


def test_cli_unwritable_output(cli, example_job, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_error(cli("paste", str(example_job.root), "-o", str(blocker / "o.mp4")), "cannot write")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_error(cli("paste", str(example_job.root), "-o", str(locked / "o.mp4")), "cannot write")


def test_cli_not_a_job(cli, tmp_path):
    assert_error(cli("paste", str(tmp_path), "-o", str(tmp_path / "o.mp4")), "is not an s3edit job folder")


def test_cli_unknown_edit(cli, example_job, tmp_path):
    assert_error(cli("paste", str(example_job.root), "-o", str(tmp_path / "o.mp4"), "--edit", "nope"),
                 "has no edit named 'nope'")


def test_writer_failure_leaves_no_output(example_job, tmp_path, monkeypatch):
    from s3edit.pipeline import paste

    def boom(*args, **kwargs):
        raise OutputError("disk full")

    monkeypatch.setattr(paste, "blend_planes", boom)
    with pytest.raises(OutputError):
        paste_video(example_job, tmp_path / "o.mp4", PasteConfig(blend="replace", max_frames=3))
    assert list(tmp_path.iterdir()) == []


# --- examples/batch.sh ---------------------------------------------------------------


STUB_S3EDIT = """#!/usr/bin/env bash
# stands in for `s3edit` (whose start-up imports the whole model stack): logs its
# arguments, fails `align` on a clip named 'bad*', writes the paste output it is given
echo "$*" >> "$CALLS"
case "$*" in
  *" align "*"/bad"*) echo "error: not a video" >&2; exit 1 ;;
  *" paste "*) while [ "$#" -gt 0 ]; do [ "$1" = -o ] && echo video > "$2"; shift; done ;;
esac
"""


def test_batch_script_continues_past_a_failing_clip(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    stub, calls = tmp_path / "s3edit", tmp_path / "calls.txt"
    stub.write_text(STUB_S3EDIT)
    stub.chmod(0o755)
    clips, out = tmp_path / "in", tmp_path / "out"
    clips.mkdir()
    for name in ("bad one.mp4", "good.MOV", "notes.txt"):
        (clips / name).write_text("x")
    script = Path(__file__).resolve().parents[2] / "examples" / "batch.sh"
    env = dict(os.environ, S3EDIT=str(stub), CALLS=str(calls), PASTE_ARGS="--crf 18")
    proc = subprocess.run(["bash", str(script), str(clips), str(out)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 of 2 clips done; 1 failed: bad one.mp4" in proc.stdout
    assert (out / "good.MOV.s3edit.mp4").read_text() == "video\n"
    lines = calls.read_text().splitlines()
    assert lines[0] == f"--quiet align {clips}/bad one.mp4 -o {out}/bad one.mp4.job"
    assert lines[2] == (f"--quiet paste {out}/good.MOV.job -o {out}/good.MOV.s3edit.mp4 "
                        "--overwrite --crf 18")
    assert len(lines) == 3  # nothing ran for the failed clip after align; notes.txt skipped
    log = (out / "batch.log").read_text()
    assert "error: not a video" in log and "!!! FAILED" in log
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(["bash", str(script), str(empty), str(out)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2 and "no videos" in proc.stderr


# --- real footage (skips where ../shared/clips is absent) ------------------------------


def test_real_clip_round_trip(shared_clips, tmp_path):
    """talk_man_glasses_headmotion_02 (glasses, strong head motion): the first 40 frames
    (benchmarks/align_paste.py runs the whole clip)."""
    clip = shared_clips / "talk_man_glasses_headmotion_02.mp4"
    job = align_video(clip, tmp_path / "job", max_frames=40)
    out = tmp_path / "out.mp4"
    result = paste_video(job, out, PasteConfig(max_frames=40, blend="replace"))  # the harder one
    assert result.n_pasted == 40
    src, got = probe(clip), probe(out)
    assert (got.n_frames, got.fps, got.width, got.height) == (40, src.fps, src.width, src.height)
    assert got.has_audio
    payloads = audio_payloads(out)
    assert payloads == audio_payloads(clip)[: len(payloads)] and len(payloads) > 50
    values = frame_psnrs(clip, out)
    assert len(values) == 40 and min(values) >= MIN_PSNR, min(values)


def test_cut_to_no_face_passes_through(shared_clips, tmp_path):
    """man_face_then_noface_cut.mov (HEVC, VFR): a face until frame 71, then a title."""
    clip = shared_clips / "man_face_then_noface_cut.mov"
    job = align_video(clip, tmp_path / "job", max_frames=80)
    valid = load_file(job.track_path)["valid"]
    assert valid[:60].all() and not valid[72:].any()
    out = tmp_path / "out.mp4"
    paste_video(job, out, PasteConfig(blend="replace", crf=0, max_frames=80))
    got = probe(out)
    assert got.n_frames == 80 and got.codec == "h264"
    for a, b in zip(iter_frames(clip, stop=80), iter_frames(out)):
        assert a.pts == b.pts
        if a.index >= 72:
            assert same_planes(a, b), a.index
        elif a.index % 10 == 0:
            assert psnr(a.image, b.image) >= MIN_PSNR
