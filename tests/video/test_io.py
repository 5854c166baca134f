"""Video I/O: probe facts and errors, streaming decode, H.264 writer with audio copy,
VFR timestamps, rotation, odd sizes, old and new codecs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from s3edit.errors import InputError
from s3edit.video.io import (
    VideoWriter,
    iter_frames,
    probe,
    source_info,
    write_excerpt,
    yuv_planes,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def packets(path: Path, kind: str) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0] if kind == "audio" else c.streams.video[0]
        return [(p.pts, bytes(p)) for p in c.demux(stream) if p.size > 0]


def make_clip(path: Path, images, pts, time_base=Fraction(1, 1000), rotation=0,
              codec="libx264", options=None, rate=25) -> Path:
    """A test clip from RGB images at the given timestamps (lossless x264 by default)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = images[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = options if options is not None else {"qp": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for image, t in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(t), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def pattern(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth, asymmetric test image (chroma subsampling keeps it nearly intact)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / w, 255 * y / h, 128 + 60 * np.sin((x + 2 * y + seed) / 7)], -1)
    img[: h // 4, : w // 4] = (250, 20, 20)  # a red block in the top-left corner
    return img.clip(0, 255).astype(np.uint8)


# --- probe -------------------------------------------------------------------------


def test_probe_example_clip(example_clip):
    info = probe(example_clip)
    assert (info.n_frames, info.width, info.height, info.fps) == (50, 384, 384, 25.0)
    assert info.codec == "h264" and info.has_audio and not info.variable_frame_rate
    assert info.rotation == 0 and info.pix_fmt == "yuv420p"
    assert info.duration == pytest.approx(2.0)
    src = source_info(info)
    assert src.n_frames == 50 and src.size_bytes == example_clip.stat().st_size
    assert Fraction(src.time_base) == info.time_base


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(InputError, match="is not a video that can be read"):
        probe(path)


def test_truncated_file(tmp_path, example_clip):
    data = example_clip.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated|not a video that can be read"):
        probe(path)


def test_truncated_faststart_file(tmp_path, example_clip):
    """moov atom first: the container opens, half the frames are missing."""
    full = tmp_path / "fs.mp4"
    with av.open(str(example_clip)) as src, av.open(str(full), "w",
                                                    options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = full.read_bytes()
    half = tmp_path / "fs_half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"is truncated \(\d+ of 50 frames present\)"):
        probe(half)


def test_audio_only_file_has_no_video(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=44100)
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(InputError, match="has no video stream"):
        probe(path)


@pytest.mark.parametrize("suffix, message", [
    (".mp4", "has no video stream"),  # mp4 drops a track without samples
    (".mkv", r"ends before any video data \(empty or truncated\)"),
])
def test_zero_frames(tmp_path, suffix, message):
    path = tmp_path / f"empty{suffix}"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    with pytest.raises(InputError, match=message):
        probe(path)


# --- decode ------------------------------------------------------------------------


def test_iter_frames_streams_and_seeks(example_clip):
    frames = list(iter_frames(example_clip))
    assert [f.index for f in frames] == list(range(50))
    assert all(f.image.shape == (384, 384, 3) and f.image.dtype == np.uint8 for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == 50
    part = list(iter_frames(example_clip, start=37, stop=40))
    assert [f.index for f in part] == [37, 38, 39]
    for f in part:
        assert f.pts == frames[f.index].pts
        assert np.array_equal(f.image, frames[f.index].image)
    assert list(iter_frames(example_clip, start=50)) == []


# --- encode ------------------------------------------------------------------------


def test_pass_through_is_bit_exact_with_audio_copied(tmp_path, example_clip):
    info = probe(example_clip)
    out = tmp_path / "copy.mp4"
    with VideoWriter(out, info, crf=0, audio_from=example_clip) as writer:
        for frame in iter_frames(example_clip):
            writer.write_frame(frame)
    got = probe(out)
    assert (got.n_frames, got.width, got.height, got.fps) == (50, 384, 384, 25.0)
    assert got.has_audio
    for a, b in zip(iter_frames(example_clip), iter_frames(out)):
        assert a.pts == b.pts
        assert all(np.array_equal(p, q) for p, q in zip(yuv_planes(a.av_frame), yuv_planes(b.av_frame)))
    src_audio, out_audio = packets(example_clip, "audio"), packets(out, "audio")
    assert [d for _, d in src_audio] == [d for _, d in out_audio]  # packet for packet


def test_rgb_write_round_trip(tmp_path, example_clip):
    info = probe(example_clip)
    out = tmp_path / "rgb.mp4"
    with VideoWriter(out, info) as writer:  # default crf
        for frame in iter_frames(example_clip, stop=10):
            writer.write(frame.image, frame.pts)
    values = [psnr(a.image, b.image) for a, b in zip(iter_frames(example_clip), iter_frames(out))]
    # the whole frame goes RGB -> 4:2:0 again (paste avoids this outside the face)
    assert len(values) == 10 and min(values) > 35


def test_interrupted_write_leaves_nothing(tmp_path, example_clip):
    info = probe(example_clip)
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, info, audio_from=example_clip) as writer:
            for frame in iter_frames(example_clip, stop=5):
                writer.write_frame(frame)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_excerpt_trims_audio(tmp_path, example_clip):
    info = write_excerpt(example_clip, tmp_path / "cut.mp4", stop=20)
    assert info.n_frames == 20 and info.has_audio
    audio = packets(tmp_path / "cut.mp4", "audio")
    with av.open(str(tmp_path / "cut.mp4")) as c:
        tb = c.streams.audio[0].time_base
    assert float(audio[-1][0] * tb) < 20 / 25  # no audio past the last frame


def test_variable_frame_rate_timestamps_kept(tmp_path):
    pts = [0, 40, 100, 120, 200, 210, 300, 333, 400, 480]
    src = make_clip(tmp_path / "vfr.mp4", [pattern(48, 64, i) for i in range(10)], pts)
    info = probe(src)
    assert info.variable_frame_rate and info.n_frames == 10
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info) as writer:
        for frame in iter_frames(src):
            writer.write(frame.image, frame.pts)
    got = probe(out)
    assert got.variable_frame_rate
    assert [float(f.pts * got.time_base) for f in iter_frames(out)] == [p / 1000 for p in pts]


def test_rotation_applied_and_kept(tmp_path):
    coded = [pattern(32, 64, i) for i in range(4)]
    src = make_clip(tmp_path / "rot.mp4", coded, [0, 40, 80, 120], rotation=90)
    info = probe(src)
    assert info.rotation == 90 and (info.width, info.height) == (32, 64)
    frames = list(iter_frames(src))
    for frame, image in zip(frames, coded):
        assert frame.image.shape == (64, 32, 3)
        assert psnr(frame.image, np.rot90(image)) > 30  # vs 10 dB or less if mis-rotated
    red = np.array([250, 20, 20])
    off = lambda block: np.abs(block.astype(float) - red).mean()  # noqa: E731
    assert off(frames[0].image[-14:, 1:7]) < 15 and off(frames[0].image[:14, 1:7]) > 30
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info, crf=0) as writer:
        writer.write_frame(frames[0])
        for frame in frames[1:]:
            writer.write(frame.image, frame.pts)
    got = probe(out)
    assert got.rotation == 90 and (got.width, got.height) == (32, 64)
    back = list(iter_frames(out))
    assert np.array_equal(back[0].image, frames[0].image)
    assert min(psnr(a.image, b.image) for a, b in zip(frames, back)) > 35  # RGB -> 4:2:0 again


def test_odd_size_written_one_pixel_smaller(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (49, 65, 3), dtype=np.uint8) for _ in range(3)]
    src = make_clip(tmp_path / "odd.mkv", images, [0, 1, 2], Fraction(1, 25), codec="ffv1",
                    options={})
    info = probe(src)
    assert (info.width, info.height) == (65, 49)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, info, crf=0) as writer:
        assert (writer.width, writer.height) == (64, 48)
        for frame in iter_frames(src):
            writer.write_frame(frame)
    assert (probe(out).width, probe(out).height) == (64, 48)
    for a, b in zip(iter_frames(src), iter_frames(out)):
        (ya, ua, va), (yb, ub, vb) = yuv_planes(a.av_frame), yuv_planes(b.av_frame)
        assert np.array_equal(ya[:48, :64], yb)  # the top-left 64x48, unscaled
        assert np.array_equal(ua[:24, :32], ub) and np.array_equal(va[:24, :32], vb)


def test_hevc_10_bit(tmp_path):
    images = [pattern(48, 64, i) for i in range(4)]
    path = tmp_path / "ten.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p10le"
        stream.options = {"x265-params": "log-level=none:lossless=1"}
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p10le")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    info = probe(path)
    assert info.codec == "hevc" and info.pix_fmt == "yuv420p10le" and info.n_frames == 4
    frames = list(iter_frames(path))
    assert all(f.image.dtype == np.uint8 and psnr(f.image, im) > 30 for f, im in zip(frames, images))
    out_path = tmp_path / "out.mp4"
    with VideoWriter(out_path, info, crf=0) as writer:  # 10-bit -> 8-bit 4:2:0
        for frame in frames:
            writer.write_frame(frame)
    back = list(iter_frames(out_path))
    assert probe(out_path).pix_fmt == "yuv420p"
    for a, b in zip(frames, back):  # the 8-bit planes that were encoded, losslessly
        assert all(np.array_equal(p, q) for p, q in zip(yuv_planes(a.av_frame), yuv_planes(b.av_frame)))


def test_write_rejects_wrong_size(tmp_path, example_clip):
    info = probe(example_clip)
    with pytest.raises(ValueError, match="image is 10x10, the video is 384x384"):
        with VideoWriter(tmp_path / "o.mp4", info) as writer:
            writer.write(np.zeros((10, 10, 3), np.uint8), 0)
    assert list(tmp_path.iterdir()) == []


# --- real footage (skips where ../shared/clips is absent) ---------------------------


def test_mpeg4_part2_portrait(shared_clips, tmp_path):
    path = shared_clips / "talk_man_earbuds_portrait_08.mp4"
    info = probe(path)
    assert info.codec == "mpeg4" and (info.width, info.height) == (296, 400)
    assert info.n_frames == 500 and info.fps == 50 and not info.has_audio
    cut = write_excerpt(path, tmp_path / "cut.mp4", stop=10)
    assert (cut.n_frames, cut.width, cut.height, cut.fps) == (10, 296, 400, 50)
    for a, b in zip(iter_frames(path, stop=10), iter_frames(tmp_path / "cut.mp4")):
        assert np.array_equal(yuv_planes(a.av_frame)[0], yuv_planes(b.av_frame)[0])


def test_hevc_mov_vfr_with_audio(shared_clips, tmp_path):
    path = shared_clips / "man_face_then_noface_cut.mov"
    info = probe(path)
    assert info.codec == "hevc" and info.has_audio and info.variable_frame_rate
    assert (info.n_frames, info.width, info.height) == (169, 960, 540)
    frames = list(iter_frames(path, start=100, stop=103))
    assert [f.index for f in frames] == [100, 101, 102]
    assert frames[0].image.shape == (540, 960, 3)


@pytest.mark.parametrize("colorspace", [None, 1, 5, 9])
def test_an_rgb_change_maps_through_the_yuv_matrix(colorspace):
    """rgb_delta_to_yuv420(d) is the change of the frame's YUV planes when its RGB changes
    by d: within the two roundings (to 8-bit RGB and to 8-bit YUV) of converting both."""
    from s3edit.pipeline.paste import rgb_to_yuv420
    from s3edit.video.io import rgb_delta_to_yuv420

    rng = np.random.default_rng(0)
    for _ in range(10):
        base = np.full((16, 16, 3), rng.integers(40, 200, 3), np.uint8)
        changed = np.clip(np.rint(base + rng.normal(0, 15, 3)), 0, 255).astype(np.uint8)
        before, after = rgb_to_yuv420(base, colorspace), rgb_to_yuv420(changed, colorspace)
        delta = rgb_delta_to_yuv420(changed.astype(np.float32) - base, colorspace)
        for i in range(3):
            assert delta[i].shape == before[i].shape
            assert np.abs((after[i] - before[i]) - delta[i]).max() < 1.0
