"""Paste stage: put (edited) aligned crops back into the full-resolution video.

Per frame, streamed (decode frame i, read crop i, blend, encode; memory does not grow
with the clip's length):

1. the face mask of the *original* crop (``s3edit.face.mask``), in crop pixels;
2. the crop and the mask warped back into the frame by the inverse of the frame's
   align transform (cv2 ``WARP_INVERSE_MAP``: the stored frame -> crop map is used
   as-is, so no matrix inversion is needed) over the face's bounding box only;
3. blended in the frame's own 4:2:0 YUV planes, so every pixel outside the mask keeps
   its exact decoded value (no RGB round trip); the mask is box-averaged 2x2 for the
   chroma planes;
4. encoded at the source's timing with its audio copied (``s3edit.video.io``).

Blend modes, with ``m`` the warped mask:

- ``replace`` (STIT): ``out = frame * (1 - m) + warp(crop) * m``;
- ``detail``: ``out = frame + m * (warp(edited) - warp(original))``: where the edit
  changed nothing the frame keeps its full-resolution detail, which a 256 px crop of a
  large face cannot carry.

An edit confined to a region is stored as its change against the plain decode (float,
``s3edit.job``): ``detail`` adds ``m * warp(change)`` to the frame's planes directly
(the change converted with the video's YUV matrix), ``replace`` takes ``original +
change`` inside the mask.

Frames with ``valid == 0`` in the job go through untouched (``write_frame``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from s3edit import console
from s3edit.errors import InputError, JobError
from s3edit.face.mask import MaskConfig, face_mask
from s3edit.job import Job
from s3edit.paths import check_output_path
from s3edit.video.io import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    PIX_FMT,
    VideoInfo,
    VideoWriter,
    iter_frames,
    probe,
    rgb_delta_to_yuv420,
    sws_colorspace,
    yuv_planes,
)

STAGE = "paste"
BLEND_MODES = ("replace", "detail")  # `--blend` (s3edit.cli.options.Blend)
# The default blend. `detail`: its round trip (unedited crops) loses only what the
# encoder loses, >= 40.9 dB on every frame of every shared clip at the default crf;
# `replace` drops to 36.9 dB on woman_hand_occlusion_04, whose face spans ~400 px and so
# loses detail in a 256 px crop (figures: benchmarks/align_paste.py).
DEFAULT_BLEND = "detail"
TRACK_KEYS = ("valid", "transforms", "crop_landmarks")
BBOX_MARGIN = 2  # px around the warped crop's footprint, for the interpolation kernel


@dataclass(frozen=True)
class PasteConfig:
    """Options of the paste stage. ``edit`` names a set of edited crops
    (``JOB/edits/<edit>/crops``); None pastes the job's original crops (round trip)."""

    edit: str | None = None
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    blend: str = DEFAULT_BLEND
    mask: MaskConfig = field(default_factory=MaskConfig)
    overwrite: bool = False
    max_frames: int | None = None  # write only the first N frames (tests, previews)
    frames: tuple[int, int | None] | None = None  # paste only frames A .. B - 1; the rest pass through


@dataclass(frozen=True)
class PasteResult:
    output: Path
    n_frames: int  # frames written
    n_pasted: int  # frames that received a crop
    n_passed: int  # frames passed through untouched (valid == 0)
    seconds: float


@dataclass(frozen=True)
class Track:
    """The parts of ``align/track.safetensors`` paste needs (N = frames)."""

    valid: np.ndarray  # (N,) bool
    transforms: np.ndarray  # (N, 3, 3) float64, frame (display) px -> crop px
    crop_landmarks: np.ndarray  # (N, 68, 2) float32, crop px


def load_track(job: Job) -> Track:
    arrays = job.read_track(*TRACK_KEYS)
    return Track(
        valid=arrays["valid"].astype(bool),
        transforms=arrays["transforms"].astype(np.float64),
        crop_landmarks=arrays["crop_landmarks"].astype(np.float32),
    )


def source_of(job: Job, info: VideoInfo | None = None) -> VideoInfo:
    """The job's source video, checked to be the same file the job was made from
    (``info``: its probe, when the caller has it)."""
    src = job.source
    path = Path(src.path)
    if not path.is_file():
        raise InputError(
            f"the job's source video {src.path!r} is missing; put it back or rerun `s3edit align`."
        )
    stat = path.stat()
    if stat.st_size != src.size_bytes:
        raise JobError(
            f"the job's source video {src.path!r} changed since it was aligned; "
            "rerun `s3edit align` into a new job folder."
        )
    return info if info is not None else probe(path)


# --- geometry -------------------------------------------------------------------


def coded_to_display(rotation: int, coded_w: int, coded_h: int) -> np.ndarray:
    """(3, 3) map from coded pixels to display pixels for a picture shown rotated
    ``rotation`` degrees counter-clockwise (``np.rot90(coded, rotation // 90)``)."""
    k = (rotation // 90) % 4
    w1, h1 = coded_w - 1, coded_h - 1
    # display (xd, yd) -> coded (xc, yc), one per np.rot90 turn count
    d2c = {
        0: [[1, 0, 0], [0, 1, 0]],
        1: [[0, -1, w1], [1, 0, 0]],
        2: [[-1, 0, w1], [0, -1, h1]],
        3: [[0, 1, 0], [-1, 0, h1]],
    }[k]
    return np.linalg.inv(np.vstack([np.asarray(d2c, np.float64), [0, 0, 1]]))


def footprint(transform: np.ndarray, size: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Even-aligned box (x0, y0, x1, y1), end exclusive, in a ``width x height`` picture
    that holds the crop's footprint under ``transform`` (picture px -> crop px).
    None when the crop lies outside the picture."""
    corners = np.array([[-0.5, -0.5, 1], [size - 0.5, -0.5, 1],
                        [-0.5, size - 0.5, 1], [size - 0.5, size - 0.5, 1]]).T
    pts = np.linalg.inv(transform) @ corners
    pts = pts[:2] / pts[2]
    x0 = int(np.floor(pts[0].min())) - BBOX_MARGIN
    y0 = int(np.floor(pts[1].min())) - BBOX_MARGIN
    x1 = int(np.ceil(pts[0].max())) + BBOX_MARGIN + 1
    y1 = int(np.ceil(pts[1].max())) + BBOX_MARGIN + 1
    x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)  # chroma planes: even origin
    x1, y1 = min(width, x1 + x1 % 2), min(height, y1 + y1 % 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def warp_into(image: np.ndarray, transform: np.ndarray, box: tuple[int, int, int, int],
              interpolation: int, border: int) -> np.ndarray:
    """Sample crop-space ``image`` over picture ``box`` (x0, y0, x1, y1) under
    ``transform`` (picture px -> crop px): (S, S, ...) -> (y1-y0, x1-x0, ...)."""
    x0, y0, x1, y1 = box
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # box px -> picture px
    m = transform @ shift
    return cv2.warpPerspective(image, m, (x1 - x0, y1 - y0),
                               flags=interpolation | cv2.WARP_INVERSE_MAP, borderMode=border)


def rgb_to_yuv420(rgb: np.ndarray, colorspace: int | None) -> tuple[np.ndarray, ...]:
    """(h, w, 3) uint8 RGB, even h and w -> Y (h, w), U, V (h/2, w/2) float32, with the
    same swscale matrix the decoder's RGB came from (``av.VideoFrame.to_ndarray``)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = frame.reformat(format=PIX_FMT, dst_colorspace=colorspace)
    return tuple(p.astype(np.float32) for p in yuv_planes(frame))


def blend_planes(planes, box, mask, crop_yuv=None, base_yuv=None, delta_yuv=None) -> None:
    """Blend in place over ``box``. planes: frame Y, U, V (uint8); mask: (h, w) float32
    at luma resolution (box-averaged 2 x 2 for chroma); the others: Y, U, V over ``box``.
    replace (``crop_yuv``): p = p (1 - m) + c m;  detail (``crop_yuv``, ``base_yuv``):
    p = p + m (c - base);  a change (``delta_yuv``): p = p + m d."""
    x0, y0, x1, y1 = box
    masks = (mask, cv2.resize(mask, ((x1 - x0) // 2, (y1 - y0) // 2), interpolation=cv2.INTER_AREA))
    for i, plane in enumerate(planes):
        m = masks[0 if i == 0 else 1]
        s = 1 if i == 0 else 2
        region = plane[y0 // s: y1 // s, x0 // s: x1 // s]
        src = region.astype(np.float32)
        if delta_yuv is not None:
            change = delta_yuv[i]
        else:
            change = crop_yuv[i] - (src if base_yuv is None else base_yuv[i])
        region[...] = np.clip(np.rint(src + m * change), 0, 255).astype(np.uint8)


# --- the stage ------------------------------------------------------------------


def paste_video(job: Job | str | Path, out: str | Path, config: PasteConfig = PasteConfig(),
                info: VideoInfo | None = None) -> PasteResult:
    """Paste the job's crops (or ``config.edit``'s edit) into its source video and write
    ``out`` (H.264, the source's timing and audio). ``info``: the source's probe, when
    the caller has it."""
    if config.blend not in BLEND_MODES:
        raise InputError(f"unknown blend {config.blend!r}; choose one of {', '.join(BLEND_MODES)}.")
    job = job if isinstance(job, Job) else Job.open(job)
    track = load_track(job)
    info = source_of(job, info)
    out = check_output_path(out, inputs=[info.path], overwrite=config.overwrite)
    if config.edit is not None and not job.has_edit(config.edit):
        raise JobError(
            f"job {str(job.root)!r} has no edit named {config.edit!r}; "
            "run `s3edit edit` first or pick another --edit."
        )
    n_total = min(info.n_frames, config.max_frames or info.n_frames)
    if len(track.valid) < n_total:
        console.note(
            f"the job aligned {len(track.valid)} of {info.n_frames} frames; "
            "the rest are written untouched."
        )
    started = time.perf_counter()
    painter = _Painter(job, track, info, config)
    n_written = 0
    with VideoWriter(out, info, crf=config.crf, preset=config.preset,
                     audio_from=info.path if info.has_audio else None,
                     trim_audio=n_total < info.n_frames) as writer, \
            console.progress("paste", n_total) as advance:
        painter.set_size(writer.coded_width, writer.coded_height)
        for frame in iter_frames(info.path, stop=n_total):
            if painter.paints(frame.index):
                writer.write_yuv(*painter.paint(frame), frame.pts)
            else:
                writer.write_frame(frame)
            n_written += 1
            advance(1)
    n_pasted = int(sum(painter.paints(i) for i in range(n_written)))
    result = PasteResult(output=out, n_frames=n_written, n_pasted=n_pasted,
                         n_passed=n_written - n_pasted, seconds=time.perf_counter() - started)
    record(job, config, result)
    return result


def record(job: Job, config: PasteConfig, result: PasteResult) -> None:
    """Note the video written in the manifest (``stages.paste``; ``s3edit score JOB``
    reads ``output`` from it). Paste is not skipped on a rerun: it always writes."""
    params = asdict(config)
    params.pop("overwrite")
    job.finish_stage(
        STAGE, params=params, output=str(result.output.resolve()), frames=result.n_frames,
        frames_pasted=result.n_pasted, frames_untouched=result.n_passed,
    )


class _Painter:
    """Blends crop i into frame i (holds what is fixed for the clip)."""

    def __init__(self, job: Job, track: Track, info: VideoInfo, config: PasteConfig):
        self.job, self.track, self.info, self.config = job, track, info, config
        self.changes = job.changes(config.edit) if config.edit is not None else None
        self.size = int(job.require("align", "run `s3edit align VIDEO -o JOB` first.")["params"]["size"])
        coded_w, coded_h = info.coded_size
        self.c2d = coded_to_display(info.rotation, coded_w, coded_h)
        self.colorspace = sws_colorspace(info.colorspace)
        self.width, self.height = coded_w, coded_h

    def set_size(self, width: int, height: int) -> None:
        """The writer's (even) coded size: pasting stays inside it."""
        self.width, self.height = width, height

    def paints(self, index: int) -> bool:
        if index >= len(self.track.valid):
            return False
        if self.config.frames is not None:
            start, stop = self.config.frames
            if index < start or (stop is not None and index >= stop):
                return False
        return bool(self.track.valid[index]) and np.isfinite(self.track.transforms[index]).all()

    def paint(self, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame -> blended Y, U, V planes (coded orientation)."""
        i = frame.index
        planes = yuv_planes(frame.av_frame)
        size = self.size
        transform = self.track.transforms[i] @ self.c2d  # coded px -> crop px
        box = footprint(transform, size, self.width, self.height)
        if box is None:
            return planes
        mask = face_mask(self.track.crop_landmarks[i: i + 1], size, self.config.mask)[0]
        mask_box = warp_into(mask, transform, box, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
        if not mask_box.any():
            return planes
        change = self.changes(i) if self.changes is not None else None
        if change is not None and self.config.blend == "detail":  # no crop needed at all
            blend_planes(planes, box, mask_box, delta_yuv=self.warp_delta_yuv(change, transform, box))
            return planes
        if self.config.edit is None and self.config.blend == "detail":
            return planes  # with no edit the frame is its own best copy
        original = self.job.read_crops([i])[0]
        if change is not None:  # replace, with a confined edit
            edited = np.clip(np.rint(original + change), 0, 255).astype(np.uint8)
        else:
            edited = original if self.config.edit is None else self.job.read_crops([i], self.config.edit)[0]
        if self.config.blend == "replace":
            blend_planes(planes, box, mask_box, self.warp_yuv(edited, transform, box))
        else:
            blend_planes(planes, box, mask_box, self.warp_yuv(edited, transform, box),
                         self.warp_yuv(original, transform, box))
        return planes

    def warp_yuv(self, crop: np.ndarray, transform: np.ndarray, box) -> tuple[np.ndarray, ...]:
        """(S, S, 3) RGB crop -> its Y, U, V over ``box`` of the frame (bicubic: the
        crop is usually upsampled here, and cubic keeps more of its detail)."""
        warped = warp_into(crop, transform, box, cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
        return rgb_to_yuv420(warped, self.colorspace)

    def warp_delta_yuv(self, change: np.ndarray, transform: np.ndarray, box) -> tuple[np.ndarray, ...]:
        """(S, S, 3) float RGB change -> its Y, U, V change over ``box`` (bicubic, as
        ``warp_yuv``)."""
        warped = warp_into(np.ascontiguousarray(change, np.float32), transform, box, cv2.INTER_CUBIC,
                           cv2.BORDER_REPLICATE)
        return rgb_delta_to_yuv420(warped, self.colorspace)
