"""Video in and out on PyAV: probe, streaming decode, H.264 encode with the audio copied.

Decoding streams one frame at a time (constant memory, FFmpeg's own frame/slice threads).
Images handed out are ``(H, W, 3)`` uint8 RGB in *display* orientation: a rotation
stored in the container (display matrix) is applied, so a phone clip shot upright comes
out upright. The writer keeps the source's coded orientation and stores the same
display rotation, so untouched frames go through without any pixel change of layout.

Encoding is H.264 (libx264), 4:2:0 (``yuv420p``), at the source's timestamps and time
base (variable frame rate stays variable), quality by ``crf``. 4:2:0 needs even
dimensions: an odd-sized source is written one pixel narrower/shorter (its last
column/row, in coded orientation, is dropped; nothing is scaled, so coordinates match).
The source's audio stream is copied packet for packet (no re-encode). The file is
written under a temporary name and renamed when complete, so an interrupted encode
leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from s3edit.errors import InputError, OutputError
from s3edit.paths import atomic_path, require_input_file

# x264's CRF scale: 0 = lossless, ~18 visually lossless, 23 = x264's own default.
# 16 keeps the paste round trip >= 43 dB on every frame of the example clip and of
# talk_man_glasses_headmotion_02 (at 18 textured frames dip to ~38-41 dB from the
# encoder alone); files are ~10 % larger than at 18. Figures: benchmarks/align_paste.py.
DEFAULT_CRF = 16
DEFAULT_PRESET = "medium"  # x264 speed/size trade-off; "ultrafast" .. "veryslow"
VIDEO_CODEC = "libx264"
PIX_FMT = "yuv420p"
# How far ahead of the current video frame (seconds) audio packets are interleaved.
AUDIO_LEAD_S = 0.5
# Frame-to-frame timestamp deltas within this many time-base ticks (or this fraction of
# the median delta) count as constant frame rate: containers with a coarse time base
# (1/1000) store 29.97 fps as 33/34 ms alternating.
VFR_TOLERANCE_TICKS = 1.5
VFR_TOLERANCE_REL = 0.02


@dataclass
class SourceInfo:
    """What a job records of its source video (``source_info``); later stages (paste,
    score) check the file is still the same and use its timing."""

    path: str  # absolute path at the time the job was made
    size_bytes: int
    mtime: float
    n_frames: int
    width: int  # decoded (displayed, after rotation) frame size
    height: int
    fps: float  # average frame rate
    time_base: str  # e.g. "1/12800", of the video stream
    rotation: int  # degrees the player rotates by (metadata), already applied to frames
    codec: str
    has_audio: bool
    variable_frame_rate: bool


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video file, read by :func:`probe`. ``width``/``height`` are the
    displayed size (after rotation); ``n_frames`` is the number of video packets,
    which is the number of frames :func:`iter_frames` yields for a sound file."""

    path: Path
    n_frames: int
    width: int
    height: int
    fps: float
    time_base: Fraction
    rotation: int  # degrees counter-clockwise the player turns the coded picture (0/90/180/270)
    codec: str
    pix_fmt: str
    has_audio: bool
    variable_frame_rate: bool
    duration: float  # seconds
    colorspace: int = 2  # FFmpeg AVColorSpace of the frames (2 = unspecified)
    color_range: int = 0  # FFmpeg AVColorRange (0 unspecified, 1 limited, 2 full)

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the picture as stored, before rotation."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


def _av_message(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.rstrip(".")


def _open_input(path: Path):
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.EOFError as exc:
        raise InputError(
            f"{str(path)!r} ends before any video data (empty or truncated); "
            "use a complete copy of the video."
        ) from exc
    except av.FFmpegError as exc:
        raise InputError(
            f"{str(path)!r} is not a video that can be read ({_av_message(exc)}); "
            "check that the file is complete and is a video."
        ) from exc


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise InputError(f"{str(path)!r} has no video stream; give a video file.")
    return container.streams.video[0]


def _scan_pts(container, stream, path: Path) -> np.ndarray:
    """Presentation timestamps of every video packet in display order (demux only,
    no decoding: fast). Raises InputError where the file breaks off."""
    pts = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            pts.append(packet.pts if packet.pts is not None else packet.dts)
    except av.FFmpegError as exc:
        raise InputError(
            f"{str(path)!r} is truncated or corrupt ({_av_message(exc)}); "
            "use a complete copy of the video."
        ) from exc
    if any(p is None for p in pts):  # raw streams without timestamps: number them
        return np.arange(len(pts), dtype=np.int64)
    return np.sort(np.asarray(pts, dtype=np.int64))


def _normalise_rotation(degrees: float | int | None) -> int:
    if not degrees:
        return 0
    return int(round(float(degrees) / 90.0)) * 90 % 360


def _is_vfr(pts: np.ndarray) -> bool:
    if len(pts) < 3:
        return False
    deltas = np.diff(pts).astype(np.float64)
    median = float(np.median(deltas))
    tolerance = max(VFR_TOLERANCE_TICKS, VFR_TOLERANCE_REL * median)
    return bool(np.any(np.abs(deltas - median) > tolerance))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's facts, checking on the way that it can be decoded.

    Raises InputError (one sentence) for: a missing file, a file that is not a video,
    no video stream, a truncated or corrupt file, a video with zero frames."""
    path = require_input_file(path, "video")
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        time_base = stream.time_base or Fraction(1, 1)
        pts = _scan_pts(container, stream, path)
        if len(pts) == 0:
            raise InputError(f"{str(path)!r} has no video frames; give a video with frames.")
        if stream.frames and len(pts) < stream.frames:
            raise InputError(
                f"{str(path)!r} is truncated ({len(pts)} of {stream.frames} frames present); "
                "use a complete copy of the video."
            )
        first = _first_frame(path)
        # Read every stream fact before the container closes (its streams die with it).
        has_audio = len(container.streams.audio) > 0
        codec = stream.codec_context.name
        duration = _duration(pts, time_base, stream)
        rate = stream.average_rate or stream.guessed_rate
    rotation = _normalise_rotation(first.rotation)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    fps = float(rate) if rate else (len(pts) / duration if duration > 0 else 0.0)
    return VideoInfo(
        path=path, n_frames=int(len(pts)), width=width, height=height, fps=fps,
        time_base=Fraction(time_base), rotation=rotation, codec=codec,
        pix_fmt=first.format.name, has_audio=has_audio, variable_frame_rate=_is_vfr(pts),
        duration=duration, colorspace=int(first.colorspace), color_range=int(first.color_range),
    )


def frame_timestamps(path: str | os.PathLike) -> np.ndarray:
    """Presentation timestamps of every frame, (n_frames,) int64 in display order, from
    the container alone (no decoding)."""
    path = require_input_file(path, "video")
    with _open_input(path) as container:
        return _scan_pts(container, _video_stream(container, path), path)


def _first_frame(path: Path) -> av.VideoFrame:
    """Decode the first frame (proves the codec can be decoded)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                return frame
    except av.FFmpegError as exc:
        raise InputError(
            f"{str(path)!r} cannot be decoded ({_av_message(exc)}); "
            "the file is corrupt or uses a codec this FFmpeg build lacks."
        ) from exc
    raise InputError(f"{str(path)!r} has no decodable video frames; give a working video.")


def _duration(pts: np.ndarray, time_base: Fraction, stream) -> float:
    if len(pts) >= 2:
        step = float(np.median(np.diff(pts)))
        return float((pts[-1] - pts[0] + step) * time_base)
    if stream.duration:
        return float(stream.duration * time_base)
    return 0.0


def source_info(info: VideoInfo) -> SourceInfo:
    """The job manifest's record of a source video."""
    stat = info.path.stat()
    return SourceInfo(
        path=str(info.path.resolve()), size_bytes=stat.st_size, mtime=stat.st_mtime,
        n_frames=info.n_frames, width=info.width, height=info.height, fps=info.fps,
        time_base=f"{info.time_base.numerator}/{info.time_base.denominator}",
        rotation=info.rotation, codec=info.codec, has_audio=info.has_audio,
        variable_frame_rate=info.variable_frame_rate,
    )


# --- decoding -----------------------------------------------------------------


@dataclass
class Frame:
    """One decoded frame. ``image`` is ``(H, W, 3)`` uint8 RGB in display orientation
    (computed on first use); ``av_frame`` is the decoder's frame, for exact
    pass-through (:meth:`VideoWriter.write_frame`) and plane access (:func:`yuv_planes`)."""

    index: int
    pts: int
    av_frame: av.VideoFrame
    rotation: int = 0  # display rotation, degrees counter-clockwise

    @functools.cached_property
    def image(self) -> np.ndarray:
        return to_display(self.av_frame.to_ndarray(format="rgb24"), self.rotation)


def to_display(coded: np.ndarray, rotation: int) -> np.ndarray:
    """Coded-orientation image -> display orientation (rotate ``rotation`` degrees
    counter-clockwise, the convention of FFmpeg's display matrix and
    ``av.VideoFrame.rotation``)."""
    if rotation % 360 == 0:
        return coded
    return np.ascontiguousarray(np.rot90(coded, k=rotation // 90))


def to_coded(display: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of :func:`to_display`."""
    if rotation % 360 == 0:
        return display
    return np.ascontiguousarray(np.rot90(display, k=-(rotation // 90)))


def iter_frames(
    path: str | os.PathLike, *, start: int = 0, stop: int | None = None
) -> Iterator[Frame]:
    """Decode frames ``start`` .. ``stop - 1`` (all by default) one at a time.

    Memory stays constant whatever the clip's length. With ``start > 0`` the decoder
    seeks to the keyframe before it, and frames before ``start`` are decoded and
    dropped (so indices always count decoded frames from the first one)."""
    path = require_input_file(path, "video")
    target_pts = None
    if start > 0:
        with _open_input(path) as container:
            pts = _scan_pts(container, _video_stream(container, path), path)
        if start >= len(pts):
            return
        target_pts = int(pts[start])
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        index = 0
        if target_pts is not None:
            try:
                container.seek(target_pts, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                target_pts = None  # unseekable: decode from the start and skip
        frames = _decode(container, stream, path)
        if target_pts is not None:
            # After the seek, frames before the target are skipped by timestamp.
            for frame in frames:
                if frame.pts is not None and frame.pts >= target_pts:
                    if frame.pts != target_pts:  # seek landed wrong: fall back
                        break
                    index = start
                    yield from _number(frame, frames, index, stop)
                    return
            yield from iter_frames_from_zero(path, start=start, stop=stop)
            return
        yield from _number(None, frames, 0, stop, skip=start)


def iter_frames_from_zero(path: Path, *, start: int, stop: int | None) -> Iterator[Frame]:
    """Sequential decode from the first frame, dropping frames before ``start``."""
    with _open_input(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        yield from _number(None, _decode(container, stream, path), 0, stop, skip=start)


def _decode(container, stream, path: Path) -> Iterator[av.VideoFrame]:
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        raise InputError(
            f"{str(path)!r} is corrupt: decoding stopped ({_av_message(exc)}); "
            "use a complete copy of the video."
        ) from exc


def _number(
    first: av.VideoFrame | None,
    frames: Iterator[av.VideoFrame],
    index: int,
    stop: int | None,
    skip: int = 0,
) -> Iterator[Frame]:
    """Attach frame indices (and synthetic timestamps where the stream has none)."""
    rotation = None
    chain = frames if first is None else _prepend(first, frames)
    for av_frame in chain:
        if stop is not None and index >= stop:
            return
        if index >= skip:
            if rotation is None:
                rotation = _normalise_rotation(av_frame.rotation)
            pts = av_frame.pts if av_frame.pts is not None else index
            yield Frame(index=index, pts=int(pts), av_frame=av_frame, rotation=rotation)
        index += 1


def _prepend(first, rest):
    yield first
    yield from rest


# --- planes -------------------------------------------------------------------

# FFmpeg AVColorSpace codes that swscale has YUV<->RGB matrices for (BT.709, FCC,
# BT.470BG/601, SMPTE 170M/601, SMPTE 240M, BT.2020); others use its default (601).
SWS_COLORSPACES = (1, 4, 5, 6, 7, 9)


def sws_colorspace(colorspace: int) -> int | None:
    """The matrix to convert RGB into a video's YUV with: the one
    ``VideoFrame.to_ndarray`` used to decode it (the frame's tag, else the default)."""
    return colorspace if colorspace in SWS_COLORSPACES else None



# Luma weights (Kr, Kb) of the YUV matrices, by FFmpeg AVColorSpace code (Kg = 1 - Kr - Kb):
# BT.709, FCC, BT.470BG and SMPTE 170M (both BT.601), SMPTE 240M, BT.2020; swscale's
# default is BT.601.
LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114),
                7: (0.212, 0.087), 9: (0.2627, 0.0593)}


def rgb_delta_to_yuv420(delta: np.ndarray, colorspace: int | None) -> tuple[np.ndarray, ...]:
    """A change of an RGB image, (h, w, 3) float in 0..255 units with even h and w ->
    the change of its limited-range Y (h, w), U, V (h/2, w/2), float32. YUV is affine in
    RGB, so a change maps through the matrix's linear part alone:

        dY = 219/255 (Kr dR + Kg dG + Kb dB)
        dU = 224/255 (dB - dY') / (2 (1 - Kb)),  dV = 224/255 (dR - dY') / (2 (1 - Kr))

    with dY' = Kr dR + Kg dG + Kb dB; chroma is averaged over 2x2 pixels (4:2:0)."""
    kr, kb = LUMA_WEIGHTS.get(colorspace if colorspace is not None else 5, LUMA_WEIGHTS[5])
    r, g, b = (delta[..., c].astype(np.float32) for c in range(3))
    luma = kr * r + (1.0 - kr - kb) * g + kb * b
    u = (224.0 / 255.0) * (b - luma) / (2.0 * (1.0 - kb))
    v = (224.0 / 255.0) * (r - luma) / (2.0 * (1.0 - kr))
    h, w = luma.shape
    half = (w // 2, h // 2)
    return ((219.0 / 255.0) * luma, cv2.resize(u, half, interpolation=cv2.INTER_AREA),
            cv2.resize(v, half, interpolation=cv2.INTER_AREA))


def yuv_planes(av_frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame's 8-bit 4:2:0 planes (Y ``(h, w)``, U and V ``(ceil(h/2), ceil(w/2))``)
    in coded orientation, as fresh uint8 arrays. Other pixel formats (10-bit, 4:2:2,
    4:4:4, full range 'yuvj') are converted to yuv420p first (FFmpeg swscale)."""
    if av_frame.format.name != PIX_FMT:
        av_frame = av_frame.reformat(format=PIX_FMT)
    planes = []
    for plane in av_frame.planes:
        buf = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        planes.append(buf[:, : plane.width].copy())
    return planes[0], planes[1], planes[2]


def frame_from_planes(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, width: int, height: int
) -> av.VideoFrame:
    """A yuv420p frame of ``width x height`` (even) from planes at least that large."""
    frame = av.VideoFrame(width, height, PIX_FMT)
    for plane, data in zip(frame.planes, (y, u, v)):
        buf = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        buf[:, : plane.width] = data[: plane.height, : plane.width]
    return frame


# --- encoding -----------------------------------------------------------------


class VideoWriter:
    """H.264 writer at a source video's timing, with its audio copied.

    ``with VideoWriter(out, like=info, audio_from=info.path) as w: w.write(img, pts)``.
    Frames must come in presentation order with the source's ``pts`` (time base
    ``like.time_base``). The output only appears under ``path`` when the ``with``
    block ends without an exception."""

    def __init__(
        self,
        path: str | os.PathLike,
        like: VideoInfo,
        *,
        crf: int = DEFAULT_CRF,
        audio_from: Path | None = None,
        preset: str = DEFAULT_PRESET,
        trim_audio: bool = False,
    ):
        """``trim_audio``: copy audio only up to the end of the last frame written
        (for excerpts); by default the whole audio track is copied."""
        if not 0 <= int(crf) <= 51:
            raise OutputError(f"crf must be between 0 and 51 (got {crf}); {DEFAULT_CRF} is the default.")
        self.path = Path(path)
        self.like = like
        self.crf = int(crf)
        self.preset = preset
        self.audio_from = Path(audio_from) if audio_from is not None else None
        coded_w, coded_h = like.coded_size
        self.coded_width = coded_w - coded_w % 2  # 4:2:0 needs even sizes (module doc)
        self.coded_height = coded_h - coded_h % 2
        self.trim_audio = trim_audio
        self.frames_written = 0
        self._last_pts: int | None = None
        self._frame_step = 0  # pts ticks between the last two frames written
        self._stack = contextlib.ExitStack()
        self._container = None
        self._audio_in = None
        self._audio_packets: Iterator | None = None
        self._audio_pending = None
        self._closed = False

    @property
    def width(self) -> int:
        """Displayed width of the output (after rotation)."""
        return self.coded_height if self.like.rotation in (90, 270) else self.coded_width

    @property
    def height(self) -> int:
        return self.coded_width if self.like.rotation in (90, 270) else self.coded_height

    # --- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)

    def open(self) -> None:
        try:
            tmp = self._stack.enter_context(atomic_path(self.path))
        except OSError as exc:
            raise OutputError(
                f"cannot write {str(self.path)!r} ({exc.strerror or exc}: {exc.filename}); "
                "choose a folder you can write to."
            ) from exc
        try:
            self._container = av.open(str(tmp), mode="w")
            self._add_video_stream()
            if self.audio_from is not None:
                self._add_audio_stream()
            self._container.start_encoding()
        except av.FFmpegError as exc:
            self.abort(type(exc), exc, exc.__traceback__)
            raise OutputError(
                f"cannot write {str(self.path)!r} ({_av_message(exc)}); "
                "try an .mkv or .mov output name."
            ) from exc
        except BaseException as exc:
            self.abort(type(exc), exc, exc.__traceback__)
            raise

    def _add_video_stream(self) -> None:
        like = self.like
        rate = Fraction(like.fps).limit_denominator(1001 * 1000) if like.fps > 0 else Fraction(25)
        stream = self._container.add_stream(VIDEO_CODEC, rate=rate)
        stream.width = self.coded_width
        stream.height = self.coded_height
        stream.pix_fmt = PIX_FMT
        stream.time_base = like.time_base
        cc = stream.codec_context
        cc.time_base = like.time_base
        if like.colorspace not in (0, 2):  # keep the source's colour tags (3 = reserved)
            cc.colorspace = like.colorspace
        if like.color_range == 1:
            cc.color_range = 1
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        if like.rotation:
            stream.set_display_rotation(like.rotation)
        self._video = stream

    def _add_audio_stream(self) -> None:
        self._audio_in = self._stack.enter_context(_open_input(self.audio_from))
        if not self._audio_in.streams.audio:
            return
        in_stream = self._audio_in.streams.audio[0]
        self._audio = self._container.add_stream_from_template(in_stream)
        self._audio_packets = self._audio_in.demux(in_stream)

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, and move the file into place."""
        if self._closed:
            return
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frames were written to {str(self.path)!r}.")
            for packet in self._video.encode(None):
                self._container.mux(packet)
            self._pump_audio(self._end_time() if self.trim_audio else None, final=True)
            self._container.close()
            self._container = None
        except BaseException as exc:
            self.abort(type(exc), exc, exc.__traceback__)
            raise
        self._closed = True
        self._stack.close()  # renames the temporary file to the final name

    def abort(self, exc_type=None, exc=None, tb=None) -> None:
        """Drop everything written; nothing appears under the final name."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        exc_type = exc_type or RuntimeError
        exc = exc or RuntimeError("aborted")
        with contextlib.suppress(BaseException):
            # Passing the exception makes atomic_path delete the temporary file.
            self._stack.__exit__(exc_type, exc, tb)

    # --- frames ---------------------------------------------------------------
    def write(self, image: np.ndarray, pts: int) -> None:
        """Encode an ``(H, W, 3)`` uint8 RGB image (display orientation, the source's
        size) at timestamp ``pts`` (source time base)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        if image.shape[:2] not in ((self.like.height, self.like.width), (self.height, self.width)):
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]}, the video is "
                f"{self.like.width}x{self.like.height}"
            )
        coded = to_coded(image, self.like.rotation)[: self.coded_height, : self.coded_width]
        rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(coded), format="rgb24")
        frame = rgb.reformat(format=PIX_FMT, dst_colorspace=sws_colorspace(self.like.colorspace))
        self._encode(frame, pts)

    def write_yuv(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, pts: int) -> None:
        """Encode 4:2:0 planes in coded orientation (as :func:`yuv_planes` gives)."""
        self._encode(frame_from_planes(y, u, v, self.coded_width, self.coded_height), pts)

    def write_frame(self, frame: Frame) -> None:
        """Pass an untouched source frame through: its YUV planes go to the encoder as
        decoded (no RGB round trip); at ``crf=0`` the output decodes bit-identical."""
        self.write_yuv(*yuv_planes(frame.av_frame), frame.pts)

    def _encode(self, frame: av.VideoFrame, pts: int) -> None:
        frame.pts = int(pts)
        frame.time_base = self.like.time_base
        if self.like.colorspace not in (0, 2):
            frame.colorspace = self.like.colorspace
        try:
            for packet in self._video.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as exc:
            raise OutputError(f"encoding {str(self.path)!r} failed ({_av_message(exc)}).") from exc
        self.frames_written += 1
        if self._last_pts is not None:
            self._frame_step = int(pts) - self._last_pts
        self._last_pts = int(pts)
        lead = float(pts * self.like.time_base) + AUDIO_LEAD_S
        self._pump_audio(min(lead, self._end_time()) if self.trim_audio else lead)

    def _end_time(self) -> float:
        """Seconds at which the last written frame ends."""
        if self._last_pts is None:
            return 0.0
        step = self._frame_step or (1.0 / self.like.fps / float(self.like.time_base))
        return float((self._last_pts + step) * self.like.time_base)

    def _pump_audio(self, until_s: float | None, final: bool = False) -> None:
        """Copy source audio packets that start before ``until_s`` seconds (all when
        None), so audio and video stay interleaved without buffering the whole track."""
        if self._audio_packets is None:
            return
        while True:
            packet = self._audio_pending
            if packet is None:
                packet = next(self._audio_packets, None)
                if packet is None:
                    self._audio_packets = None
                    return
            if packet.dts is None:  # end-of-stream marker
                self._audio_pending = None
                continue
            t = float(packet.dts * packet.time_base)
            if until_s is not None and t >= until_s:
                self._audio_pending = packet
                if final:
                    self._audio_packets = None
                return
            self._audio_pending = None
            packet.stream = self._audio
            self._container.mux(packet)


def write_excerpt(
    src: str | os.PathLike, dst: str | os.PathLike, *, stop: int, crf: int = 0,
    overwrite: bool = False,
) -> VideoInfo:
    """Copy the first ``stop`` frames of ``src`` (and the audio under them) to ``dst``,
    losslessly at the default ``crf=0``. Returns the excerpt's VideoInfo."""
    from s3edit.paths import check_output_path

    info = probe(src)
    dst = check_output_path(dst, inputs=[info.path], overwrite=overwrite)
    with VideoWriter(dst, info, crf=crf, audio_from=info.path if info.has_audio else None,
                     trim_audio=True) as writer:
        for frame in iter_frames(info.path, stop=stop):
            writer.write_frame(frame)
    return probe(dst)
