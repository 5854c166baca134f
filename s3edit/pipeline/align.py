"""The ``align`` stage: video -> tracked, smoothed FFHQ crops in a job directory.

    job = align_video("clip.mp4", "clip.job", size=256)

One streaming decode, memory bounded by a short window of frames:

1. decode + detect every face in every frame (``s3edit.face.detect``); the detections
   are checkpointed as the pass goes (an interrupted run resumes there) and kept when
   complete, so a rerun with other tracking/smoothing/crop parameters (same detector)
   does not detect again;
2. on the small per-frame arrays: track one face, reject outliers, fill short gaps,
   smooth, build quads and transforms (``s3edit.face.track``, ``s3edit.face.align``).
   Each of these looks only a bounded number of frames ahead (``lookahead``), so while
   the pass decodes, the detections so far are tracked again every ``CROP_EVERY``
   frames and the frames that lie further back than that are cropped from the frames
   still held in memory (*provisional* crops, their transforms recorded first);
3. when the pass ends, the final track decides: a provisional crop whose transform
   differs from the final one is removed, and any crop still missing (a resumed run,
   a rerun with other crop parameters) is made by decoding those frames again. Then
   ``align/track.safetensors`` and the manifest entry.

A rerun with the same parameters and every crop present does nothing; other parameters
discard the old crops and redo the stage.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from s3edit import console
from s3edit.errors import InputError, NoFaceError
from s3edit.face import align as fa
from s3edit.face.detect import DETECTORS, make_detector
from s3edit.face.preview import GRID, contact_sheet, sample_frames
from s3edit.face.track import OUTLIER_HALF_WINDOW, PICK_WINDOW, Detections, Track, max_gap_frames, track_face
from s3edit.job import Job
from s3edit.video.io import VideoInfo, frame_timestamps, iter_frames, probe, source_info

STAGE = "align"
# Detections are reused only from the same back-end at the same revision: "dlib" now
# falls back to dlib's CNN detector where HOG finds nothing, so detections made by
# "dlib" without that fallback are not taken for its own.
DETECTION_REVISION = {"dlib": 2}
CROP_EVERY = 16  # frames decoded between two provisional trackings
# Checkpoint pass 1 every this many frames, or every 10 % of the frames done so far if
# that is more (keeps the total checkpoint cost linear in the clip length).
CHECKPOINT_EVERY = 50
MIN_SIZE = 16


@dataclass
class AlignParams:
    """What the crops depend on; stored in the manifest. Frames ``start`` .. ``frames``
    - 1 are aligned (``frames``: the clip's count, or fewer with ``max_frames``; frames
    before ``start`` get no crop); ``face`` is 1-based left to right, None = the most
    prominent; ``max_gap`` in frames."""

    size: int
    detector: str
    face: int | None
    max_gap: int
    sigma_centre: float
    sigma_axes: float
    frames: int
    start: int = 0

    def record(self) -> dict:
        """The manifest's params (``start`` only when a range starts after frame 0)."""
        params = asdict(self)
        if not self.start:
            del params["start"]
        return params


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
    start: int = 0,
    info: VideoInfo | None = None,
) -> Job:
    """Align ``video`` into the job folder ``job_dir`` (created, or reopened if it is a
    job of the same video). ``max_gap`` defaults to 0.4 s worth of frames; ``max_frames``
    aligns only the first frames and ``start`` skips the frames before it (``--frames
    A:B`` is ``start=A, max_frames=B``); ``info``: the video's probe, when the caller has it.
    Raises NoFaceError if no face is found anywhere."""
    _check_args(size, detector, face, max_gap, sigma_centre, sigma_axes, max_frames)
    info = info if info is not None else probe(video)
    n = info.n_frames if max_frames is None else min(max_frames, info.n_frames)
    if not 0 <= start < n:
        raise InputError(f"--frames starts at frame {start}, but the video has {n} frames to align; "
                         f"start between 0 and {n - 1}.")
    job = Job.create(job_dir, source_info(info))
    params = AlignParams(size, detector, face, max_gap if max_gap is not None
                         else max_gap_frames(info.fps), float(sigma_centre), float(sigma_axes), n, start)
    if job.is_done(STAGE, params.record()) and _crops_complete(job):
        console.note(f"align: {job.root} is already aligned with these settings; nothing to do.")
    else:
        _run(info, job, params)
    if preview:
        write_preview(job)
    return job


def _check_args(size, detector, face, max_gap, sigma_centre, sigma_axes, max_frames) -> None:
    if size < MIN_SIZE:
        raise InputError(f"--size must be at least {MIN_SIZE} (got {size}).")
    if detector not in DETECTORS:
        raise InputError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}.")
    if face is not None and face < 1:
        raise InputError(f"--face counts from 1 (got {face}).")
    if max_gap is not None and max_gap < 0:
        raise InputError(f"--max-gap must be >= 0 (got {max_gap}).")
    if sigma_centre < 0 or sigma_axes < 0:
        raise InputError("the smoothing sigmas must be >= 0.")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1 (got {max_frames}).")


def _run(info: VideoInfo, job: Job, params: AlignParams) -> None:
    previous = job.stage(STAGE)
    if previous is not None and previous.get("params") != params.record():
        job.discard_align()
    job.start_stage(STAGE, params.record())
    cropper = ProvisionalCropper(job, info, params)
    pts, dets = detect_pass(info, job, params.frames, params.detector, cropper, params.start)
    if len(dets.frame) == 0:
        frames = (f"{params.frames} frames" if not params.start
                  else f"frames {params.start}-{params.frames - 1}")
        raise NoFaceError(
            f"no face was found in any of the {frames} of {str(info.path)!r}; "
            "align needs a visible, roughly frontal face (try --detector fan)."
        )
    track = track_face(dets, (info.width, info.height), params.face, params.max_gap)
    result = build_result(pts, track, params)
    confirm_provisional(job, result)
    crop_pass(info, job, result, params.size)
    job.write_track(result.arrays())
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


def _crops_complete(job: Job) -> bool:
    if not job.has_track():
        return False
    valid = job.read_track("valid")["valid"]
    return all(job.has_crop(int(i)) for i in np.flatnonzero(valid))


# --- pass 1: detection ----------------------------------------------------------


def _load_detections(job: Job, detector: str, partial: bool = False
                     ) -> tuple[np.ndarray, Detections, int] | None:
    """(pts of frames 0 .. n_frames - 1, the detections, the first frame scanned)."""
    data = job.read_detections(partial)
    if data is None or str(data.get("detector")) != _detector_id(detector):
        return None
    try:
        first = int(data["first"]) if "first" in data else 0
        return data["pts"].astype(np.int64), Detections.from_arrays(data), first
    except (KeyError, ValueError):
        return None  # an unreadable checkpoint is redone, not trusted


def _detector_id(detector: str) -> str:
    """The name detections are stored under: the back-end, and its revision after 1."""
    revision = DETECTION_REVISION.get(detector, 1)
    return detector if revision == 1 else f"{detector}/{revision}"


def _save_detections(job: Job, detector: str, pts: list[int], dets: Detections, first: int,
                     partial: bool = False) -> None:
    job.write_detections({"detector": np.array(_detector_id(detector)), "pts": np.array(pts, np.int64),
                          "first": np.array(first), **dets.arrays()}, partial)


def detect_pass(info: VideoInfo, job: Job, n: int, detector: str, cropper: "ProvisionalCropper | None" = None,
                first: int = 0) -> tuple[np.ndarray, Detections]:
    """Every face in frames ``first`` .. n-1: ``(pts (n,) int64, Detections)`` (frames
    before ``first`` have no detections; their pts come from the container). Resumes from
    the checkpoint / reuses the finished detections of the same detector when they
    cover these frames. ``cropper`` makes provisional crops as frames are decoded."""
    cached = _load_detections(job, detector)
    if cached is not None and cached[2] <= first and cached[1].n_frames >= n:
        return cached[0][:n], cached[1].head(n).from_frame(first)
    found = [d for d in (cached, _load_detections(job, detector, partial=True))
             if d is not None and d[2] <= first <= d[1].n_frames]
    resumed = max(found, key=lambda d: d[1].n_frames) if found else None
    if resumed is not None:
        pts, dets, scanned_from = list(resumed[0]), resumed[1], resumed[2]
    else:
        pts = list(frame_timestamps(info.path)[:first]) if first else []
        dets, scanned_from = replace(Detections.empty(), n_frames=first), first
    start = dets.n_frames
    model = make_detector(detector) if start < n else None
    pending: list[list] = []
    with console.progress("align: detect", n) as advance:
        advance(start)
        for frame in iter_frames(info.path, start=start, stop=n):
            pending.append(model.detect(frame.image))
            pts.append(frame.pts)
            advance(1)
            if cropper is not None:
                cropper.push(frame, lambda: (pts, dets.concat(Detections.from_faces(pending, dets.n_frames))
                                             .from_frame(first)))
            if len(pending) >= max(CHECKPOINT_EVERY, len(pts) // 10):
                dets = dets.concat(Detections.from_faces(pending, dets.n_frames))
                pending = []
                _save_detections(job, detector, pts, dets, scanned_from, partial=True)
    dets = dets.concat(Detections.from_faces(pending, dets.n_frames))
    n = min(n, len(pts))  # a stream may hold fewer frames than its packet count
    _save_detections(job, detector, pts, dets, scanned_from)
    job.remove_partial_detections()
    pts, dets = np.asarray(pts[:n], np.int64), dets.head(n).from_frame(first)
    if cropper is not None:
        cropper.finish(pts, dets)
    return pts, dets


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


# --- crops ----------------------------------------------------------------------


def lookahead(params: AlignParams) -> int:
    """How many frames past frame i the track of frame i can still change with: outlier
    rejection's window, a gap that may still be filled, and the smoothing kernels'
    reach (``gaussian_filter1d`` truncates at 4 sigma)."""
    reach = int(4.0 * max(params.sigma_centre, params.sigma_axes) + 0.5)
    return OUTLIER_HALF_WINDOW + params.max_gap + reach + 2


class ProvisionalCropper:
    """Crops frames while the detection pass decodes them (module docstring, step 2).

    Holds the decoded frames not yet cropped (at most ``lookahead + CROP_EVERY``), tracks
    the detections so far every ``CROP_EVERY`` frames, and crops every held frame that is
    more than ``lookahead`` frames behind the newest one, once the face to follow is
    settled (``PICK_WINDOW`` frames with faces seen)."""

    def __init__(self, job: Job, info: VideoInfo, params: AlignParams):
        self.job, self.info, self.params = job, info, params
        self.held: dict[int, np.ndarray] = {}
        self.lag = lookahead(params)
        recorded = job.read_provisional()
        self.indices = list(recorded[0]) if recorded is not None else []
        self.transforms = list(recorded[1]) if recorded is not None else []

    def push(self, frame, so_far) -> None:
        """Hold ``frame``; every ``CROP_EVERY`` frames crop what is settled.
        ``so_far()`` -> (pts, Detections) of every frame decoded until now."""
        self.held[frame.index] = frame.image
        if len(self.held) < self.lag + CROP_EVERY:
            return
        pts, dets = so_far()
        settled = dets.n_frames - self.lag
        with_faces = np.unique(dets.frame)
        if len(with_faces) < PICK_WINDOW or with_faces[PICK_WINDOW - 1] >= settled:
            self._drop(settled)  # the face to follow may still change: crop these later
            return
        self._crop(pts, dets, settled)

    def finish(self, pts, dets: Detections) -> None:
        """The pass is over: crop every frame still held, with the final track."""
        if self.held and len(dets.frame):
            self._crop(pts, dets, dets.n_frames)
        self.held.clear()

    def _crop(self, pts, dets: Detections, settled: int) -> None:
        track = track_face(dets, (self.info.width, self.info.height), self.params.face, self.params.max_gap)
        result = build_result(np.asarray(pts, np.int64), track, self.params)
        ready = sorted(i for i in self.held if i < settled)
        cropped = [i for i in ready if result.valid[i] and not self.job.has_crop(i)]
        if cropped:
            self.indices += cropped
            self.transforms += [result.transforms[i] for i in cropped]
            self.job.write_provisional(np.asarray(self.indices), np.asarray(self.transforms))
            for i in cropped:
                self.job.write_crop(i, fa.warp_crop(self.held[i], result.transforms[i].astype(np.float64),
                                                    self.params.size))
        self._drop(settled)

    def _drop(self, before: int) -> None:
        for i in [i for i in self.held if i < before]:
            del self.held[i]


def confirm_provisional(job: Job, result: AlignResult) -> int:
    """Remove the provisional crops the final track does not confirm (their frame is no
    longer valid, or its transform changed); returns how many were kept."""
    recorded = job.read_provisional()
    if recorded is None:
        return 0
    indices, transforms = recorded
    wrong = [int(i) for i, t in zip(indices, transforms)
             if not (i < len(result.valid) and result.valid[i] and np.array_equal(result.transforms[i], t))]
    job.remove_crops(wrong)
    job.remove_provisional()
    return len(indices) - len(wrong)


def crop_pass(info: VideoInfo, job: Job, result: AlignResult, size: int) -> int:
    """Write the crop of every valid frame that has none yet (decoding those frames
    again); returns how many."""
    todo = [i for i in np.flatnonzero(result.valid) if not job.has_crop(int(i))]
    if not todo:
        return 0
    wanted = set(todo)
    with console.progress("align: crops", len(todo)) as advance:
        for frame in iter_frames(info.path, start=int(todo[0]), stop=int(todo[-1]) + 1):
            if frame.index not in wanted:
                continue
            crop = fa.warp_crop(frame.image, result.transforms[frame.index].astype(np.float64), size)
            job.write_crop(frame.index, crop)
            advance(1)
    return len(todo)


def write_preview(job: Job, grid: int = GRID) -> Path:
    """``align/preview.png``: a contact sheet of crops spread over the clip, with their
    landmarks (``s3edit.face.preview``)."""
    track = job.read_track("valid", "crop_landmarks")
    frames = sample_frames(track["valid"].astype(bool), grid * grid)
    sheet = contact_sheet(list(job.read_crops(frames)), track["crop_landmarks"][frames],
                          [f"#{i}" for i in frames], grid)
    return job.write_preview(sheet)
