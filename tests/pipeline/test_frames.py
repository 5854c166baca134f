"""``--frames A:B``: a preview of part of a clip. align crops only those frames, edit
encodes and decodes only them, paste writes the whole video with the rest untouched."""

from __future__ import annotations

import numpy as np
import pytest

import s3edit.pipeline.align as pa
from s3edit.errors import InputError
from s3edit.job import Job
from s3edit.pipeline.options import parse_frames
from s3edit.pipeline.paste import PasteConfig, paste_video
from s3edit.video import io as vio


def test_parse_frames():
    assert parse_frames("10:20") == (10, 20) and parse_frames("5:") == (5, None) and parse_frames(":9") == (0, 9)
    assert parse_frames(None) is None
    for bad in ("x", "5", "9:3", "-1:4", "3:3", "a:b"):
        with pytest.raises(InputError, match="is not a range of frames; write A:B"):
            parse_frames(bad)


def test_align_a_range_crops_only_those_frames(cli, example_clip, tmp_path):
    result = cli("align", str(example_clip), "-o", str(tmp_path / "a.s3job"), "--size", "64", "--frames", "10:20")
    assert result.exit_code == 0, result.stderr
    job = Job.open(tmp_path / "a.s3job")
    track = job.read_track("valid", "pts")
    assert len(track["valid"]) == 20 and not track["valid"][:10].any() and track["valid"][10:].all()
    assert track["pts"].tolist() == vio.frame_timestamps(example_clip)[:20].tolist()  # every frame has its time
    assert sorted(p.name for p in job.crops_dir.iterdir()) == [f"{i:06d}.png" for i in range(10, 20)]
    assert job.stage("align")["params"]["start"] == 10


def test_a_range_reuses_the_detections_of_the_whole_clip(example_clip, tmp_path, monkeypatch):
    pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=30)
    decodes = []
    real = vio.iter_frames

    def counting(path, **kw):
        decodes.append(kw)
        return real(path, **kw)

    monkeypatch.setattr(pa, "iter_frames", counting)
    job = pa.align_video(example_clip, tmp_path / "a.s3job", size=64, start=12, max_frames=24)
    assert decodes == [{"start": 12, "stop": 24}]  # no detection pass: only the crops are decoded
    valid = job.read_track("valid")["valid"]
    assert len(valid) == 24 and not valid[:12].any() and valid[12:].all()


def test_edit_a_range_of_a_video_leaves_the_rest_untouched(cli, example_clip, small_weights, tiny, tmp_path):
    out = tmp_path / "preview.mp4"
    result = cli("edit", str(example_clip), "--attr", "Young=4", "--frames", "20:26", "--job",
                 str(tmp_path / "a.s3job"), "--weights", str(small_weights), "--steps", "2", "--device", "cpu",
                 "--size", str(tiny.crop_size), "--json", "-o", str(out),
                 "--fixed-point", "0")  # the random tiny model's whole-face edit shows most without corrections
    assert result.exit_code == 0, result.stderr
    job = Job.open(tmp_path / "a.s3job")
    assert job.aligned_frames().indices.tolist() == list(range(20, 26))
    src = list(vio.iter_frames(example_clip))
    dst = list(vio.iter_frames(out))
    assert len(dst) == len(src)  # the whole video is written
    # outside the range only the encoder touched the frames; inside, the whole-face edit shows
    diff = [np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(src, dst)]
    assert max(diff[:20] + diff[26:]) < 1.5
    assert min(diff[20:26]) > 2 * max(diff[:20] + diff[26:])


def test_edit_frames_of_a_job_says_to_align_the_range(cli, tmp_path, example_clip):
    cli("align", str(example_clip), "-o", str(tmp_path / "a.s3job"), "--size", "64", "--frames", "0:4")
    result = cli("edit", str(tmp_path / "a.s3job"), "--attr", "Young", "--frames", "0:2")
    assert result.exit_code == 1 and "--frames picks the frames to align, so it goes with a VIDEO" in result.stderr


def test_paste_a_range_passes_the_rest_through(example_clip, tmp_path):
    job = pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=12)
    result = paste_video(job, tmp_path / "out.mp4", PasteConfig(blend="replace", crf=0, frames=(3, 7)))
    assert (result.n_frames, result.n_pasted) == (50, 4)


def test_a_range_past_the_end_is_one_sentence(cli, example_clip, tmp_path):
    result = cli("align", str(example_clip), "-o", str(tmp_path / "a.s3job"), "--frames", "60:70")
    assert result.exit_code == 1
    assert "--frames starts at frame 60, but the video has 50 frames to align" in result.stderr


def test_detections_of_an_older_dlib_chain_are_not_reused(example_clip, tmp_path, monkeypatch):
    """Detections stored under plain "dlib" (HOG without the CNN fallback) are detected
    again: the fallback may find faces they missed."""
    job = pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=6)
    data = job.read_detections()
    assert str(data["detector"]) == "dlib/2"
    job.write_detections({**data, "detector": np.array("dlib")})
    decodes = []
    real = vio.iter_frames
    monkeypatch.setattr(pa, "iter_frames", lambda path, **kw: decodes.append(kw) or real(path, **kw))
    pa.align_video(example_clip, tmp_path / "a.s3job", size=64, max_frames=6, sigma_axes=2.0)
    assert decodes and decodes[0] == {"start": 0, "stop": 6}  # detected again
