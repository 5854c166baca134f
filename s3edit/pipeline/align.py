"""The ``align`` stage: video -> tracked, smoothed FFHQ crops in a job directory.

    job = align_video("clip.mp4", "clip.job", size=256)

Two streaming passes, so memory does not grow with the clip's length:

1. decode + detect every face in every frame (``s3edit.face.detect``); the detections
   are checkpointed to ``align/landmarks.partial.npz`` as the pass goes (an interrupted
   run resumes there) and kept as ``align/detections.npz`` when complete, so a rerun
   with other tracking/smoothing/crop parameters (same detector) does not detect again;
2. on the small per-frame arrays: track one face, reject outliers, fill short gaps,
   smooth, build quads and transforms (``s3edit.face.track``, ``s3edit.face.align``);
   then decode again and write each valid frame's crop atomically (crops already on
   disk from an interrupted run with the same parameters are kept), then
   ``align/track.safetensors`` and the manifest entry.

A rerun with the same parameters and every crop present does nothing; other parameters
discard the old crops and redo the stage.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import save_file

from s3edit import console
from s3edit.errors import NoFaceError
from s3edit.face import align as fa
from s3edit.face.detect import DETECTORS, make_detector
from s3edit.face.track import Detections, Track, max_gap_frames, track_face
from s3edit.job import Job
from s3edit.paths import atomic_path
from s3edit.video.io import VideoInfo, iter_frames, probe, source_info

STAGE = "align"
PARTIAL = "landmarks.partial.npz"
DETECTIONS = "detections.npz"
# Checkpoint pass 1 every this many frames, or every 10 % of the frames done so far if
# that is more (keeps the total checkpoint cost linear in the clip length).
CHECKPOINT_EVERY = 50
MIN_SIZE = 16


@dataclass
class AlignParams:
    """What the crops depend on; stored in the manifest. ``frames`` is the number of
    frames aligned (the clip's, or fewer with ``max_frames``); ``face`` is 1-based left
    to right, None = the most prominent; ``max_gap`` in frames."""

    size: int
    detector: str
    face: int | None
    max_gap: int
    sigma_centre: float
    sigma_axes: float
    frames: int


@dataclass
class AlignResult:
    """Per-frame arrays of ``track.safetensors`` (shapes in ``s3edit.job``)."""

    pts: np.ndarray
    detected: np.ndarray
    valid: np.ndarray
    landmarks_raw: np.ndarray
    landmarks: np.ndarray
    quads_raw: np.ndarray
    quads: np.ndarray
    transforms: np.ndarray
    crop_landmarks: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v) for k, v in asdict(self).items()}


def align_video(
    video: str | os.PathLike,
    job_dir: str | os.PathLike,
    *,
    size: int = 256,
    detector: str = "dlib",
    face: int | None = None,
    max_gap: int | None = None,
    sigma_centre: float = fa.SIGMA_CENTRE,
    sigma_axes: float = fa.SIGMA_AXES,
    preview: bool = False,
    max_frames: int | None = None,
) -> Job:
    """Align ``video`` into the job folder ``job_dir`` (created, or reopened if it is a
    job of the same video). ``max_gap`` defaults to 0.4 s worth of frames; ``max_frames``
    aligns only the first frames. Raises NoFaceError if no face is found anywhere."""
    _check_args(size, detector, face, max_gap, sigma_centre, sigma_axes, max_frames)
    info = probe(video)
    job = Job.create(job_dir, source_info(info))
    n = info.n_frames if max_frames is None else min(max_frames, info.n_frames)
    params = AlignParams(size, detector, face, max_gap if max_gap is not None
                         else max_gap_frames(info.fps), float(sigma_centre), float(sigma_axes), n)
    if job.is_done(STAGE, asdict(params)) and _crops_complete(job):
        console.note(f"align: {job.root} is already aligned with these settings; nothing to do.")
    else:
        _run(info, job, params)
    if preview:
        from s3edit.face.preview import write_preview

        write_preview(job)
    return job


def _check_args(size, detector, face, max_gap, sigma_centre, sigma_axes, max_frames) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} (got {size}).")
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
    if face is not None and face < 1:
        raise ValueError(f"face counts from 1 (got {face}).")
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 (got {max_gap}).")
    if sigma_centre < 0 or sigma_axes < 0:
        raise ValueError("smoothing sigmas must be >= 0.")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (got {max_frames}).")


def _run(info: VideoInfo, job: Job, params: AlignParams) -> None:
    previous = job.stage(STAGE)
    if previous is not None and previous.get("params") != asdict(params):
        _discard_outputs(job)
    job.start_stage(STAGE, asdict(params))
    pts, dets = detect_pass(info, job, params.frames, params.detector)
    if len(dets.frame) == 0:
        raise NoFaceError(
            f"no face was found in any of the {params.frames} frames of {str(info.path)!r}; "
            "align needs a visible, roughly frontal face (try --detector fan)."
        )
    track = track_face(dets, (info.width, info.height), params.face, params.max_gap)
    result = build_result(pts, track, params)
    crop_pass(info, job, result, params.size)
    with atomic_path(job.track_path) as tmp:
        save_file(result.arrays(), str(tmp))
    job.finish_stage(
        STAGE,
        frames=params.frames,
        frames_with_face=int(track.detected.sum()),
        frames_valid=int(track.valid.sum()),
        gaps_filled=track.gaps_filled,
        frames_filled=track.frames_filled,
        long_gaps=track.long_gaps,
        outliers_rejected=track.outliers,
    )


def _discard_outputs(job: Job) -> None:
    """Crops and track of a run with other parameters (detections are kept: they
    carry their detector's name and are reused only by the same detector)."""
    if job.crops_dir.exists():
        shutil.rmtree(job.crops_dir)
    job.track_path.unlink(missing_ok=True)
    (job.align_dir / "preview.png").unlink(missing_ok=True)


def _crops_complete(job: Job) -> bool:
    if not job.track_path.exists():
        return False
    from safetensors.numpy import load_file

    valid = load_file(job.track_path)["valid"]
    return all(job.crop_path(i).exists() for i in np.flatnonzero(valid))


# --- pass 1: detection ----------------------------------------------------------


def _load_detections(path: Path, detector: str) -> tuple[np.ndarray, Detections] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            if str(data["detector"]) != detector:
                return None
            return data["pts"].astype(np.int64), Detections.from_arrays(data)
    except (OSError, ValueError, KeyError):
        return None  # an unreadable checkpoint is redone, not trusted


def _save_detections(path: Path, detector: str, pts: list[int], dets: Detections) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, detector=np.array(detector), pts=np.array(pts, np.int64), **dets.arrays())


def detect_pass(info: VideoInfo, job: Job, n: int, detector: str
                ) -> tuple[np.ndarray, Detections]:
    """Every face in frames 0..n-1: ``(pts (n,) int64, Detections)``. Resumes from the
    checkpoint / reuses the finished detections of the same detector."""
    done_path, partial_path = job.align_dir / DETECTIONS, job.align_dir / PARTIAL
    cached = _load_detections(done_path, detector)
    if cached is not None and cached[1].n_frames >= n:
        return cached[0][:n], cached[1].head(n)
    found = [d for d in (cached, _load_detections(partial_path, detector)) if d is not None]
    resumed = max(found, key=lambda d: d[1].n_frames) if found else None
    pts, dets = (list(resumed[0]), resumed[1]) if resumed else ([], Detections.empty())
    start = dets.n_frames
    model = make_detector(detector) if start < n else None
    pending: list[list] = []
    with console.progress("align 1/2 detect", n) as advance:
        advance(start)
        for frame in iter_frames(info.path, start=start, stop=n):
            pending.append(model.detect(frame.image))
            pts.append(frame.pts)
            advance(1)
            if len(pending) >= max(CHECKPOINT_EVERY, len(pts) // 10):
                dets = dets.concat(Detections.from_faces(pending, dets.n_frames))
                pending = []
                _save_detections(partial_path, detector, pts, dets)
    dets = dets.concat(Detections.from_faces(pending, dets.n_frames))
    n = min(n, len(pts))  # a stream may hold fewer frames than its packet count
    _save_detections(done_path, detector, pts, dets)
    partial_path.unlink(missing_ok=True)
    return np.asarray(pts[:n], np.int64), dets.head(n)


# --- between the passes: per-frame arrays ---------------------------------------


def build_result(pts: np.ndarray, track: Track, params: AlignParams) -> AlignResult:
    """Smooth, build quads and transforms for every frame (small arrays only).

    Landmarks are smoothed over time with ``sigma_centre`` (light, keeps mouth motion);
    the quads with ``sigma_centre`` on the centre and ``sigma_axes`` on the axes."""
    valid = track.valid
    landmarks = fa.smooth_segments(track.landmarks, valid, params.sigma_centre)
    landmarks[~valid] = np.nan
    quads = fa.smooth_quads(track.landmarks, valid, params.sigma_centre, params.sigma_axes)
    transforms = fa.quad_to_transform(quads, params.size)
    crop_landmarks = fa.apply_transform(transforms, landmarks)
    return AlignResult(
        pts=np.asarray(pts, np.int64),
        detected=track.detected.astype(np.uint8),
        valid=valid.astype(np.uint8),
        landmarks_raw=track.landmarks_raw.astype(np.float32),
        landmarks=landmarks.astype(np.float32),
        quads_raw=fa.quad_from_landmarks(track.landmarks_raw),
        quads=quads.astype(np.float32),
        transforms=transforms.astype(np.float32),
        crop_landmarks=crop_landmarks.astype(np.float32),
    )


# --- pass 2: crops ---------------------------------------------------------------


def crop_pass(info: VideoInfo, job: Job, result: AlignResult, size: int) -> int:
    """Write the crop of every valid frame that has none yet; returns how many."""
    todo = [i for i in np.flatnonzero(result.valid) if not job.crop_path(int(i)).exists()]
    if not todo:
        return 0
    job.crops_dir.mkdir(parents=True, exist_ok=True)
    wanted = set(todo)
    with console.progress("align 2/2 crops", len(todo)) as advance:
        for frame in iter_frames(info.path, start=int(todo[0]), stop=int(todo[-1]) + 1):
            if frame.index not in wanted:
                continue
            crop = fa.warp_crop(frame.image, result.transforms[frame.index].astype(np.float64), size)
            write_png(job.crop_path(frame.index), crop)
            advance(1)
    return len(todo)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
