"""The ``score`` stage: compare an edited video with its original, frame by frame.

    report = score("clip.mp4", "clip_glasses.mp4")            # videos
    report = score("clip.job", "clip_glasses.mp4")            # the original's job: its
                                                              # source video + landmarks

What each input may be:
- ORIGINAL: a video file, or a job directory, which stands for the job's source video
  (recorded in its manifest) and contributes its smoothed landmarks from ``align``.
- EDITED: a video file, or a job directory whose ``paste`` stage recorded the video it
  wrote (``stages.paste.output``). A job without one is an error that says to pass the
  edited video file itself: the job alone does not say which edit to judge.

Landmarks come from the original's job when given (``align/track.safetensors``),
otherwise they are detected on the original (the align stage's detector and tracker).
The edited frames use the SAME landmarks: an edit keeps the pose, and scoring both
videos at identical face positions keeps detector noise out of the comparison.

Both videos are decoded once, in lockstep, two frames at a time for the warp error and
in batches of faces for the identity net; only per-frame embeddings (N x D) are kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from s3edit import console
from s3edit.errors import InputError, JobError, NoFaceError
from s3edit.face.identity import DEFAULT_ID_NET, IdentityNet, make_identity_net
from s3edit.job import Job
from s3edit.metrics import identity as idm
from s3edit.metrics import sheet as sheets
from s3edit.metrics.psnr import psnr
from s3edit.metrics.report import FrameSeries, ScoreReport
from s3edit.metrics.warp import DEFAULT_PRESET, WarpErrorMeter, face_region, nanmean
from s3edit.video.io import VideoInfo, iter_frames, probe


class AttributePredictor(Protocol):
    """Attribute heads (a weight set's classifier, ``score_nets``): (N, A) logits per face."""

    names: list[str]

    def predict(self, images: list[np.ndarray], landmarks: np.ndarray) -> np.ndarray: ...


@dataclass
class AttributeTarget:
    """What TACR/NAPR judge: the heads, the edited attribute and the edit's direction
    (+1 added, -1 removed)."""

    predictor: AttributePredictor
    attribute: str
    direction: int = 1

    @property
    def index(self) -> int:
        if self.attribute not in self.predictor.names:
            raise InputError(f"attribute {self.attribute!r} is not one the attribute heads predict.")
        return self.predictor.names.index(self.attribute)


@dataclass
class ScoreConfig:
    batch_size: int = 16  # faces per identity-net call (x2: original and edited)
    flow_preset: str = DEFAULT_PRESET  # OpenCV DIS preset for the warp error
    detector: str = "dlib"  # when landmarks must be detected (no job given)
    sheet_frames: int = sheets.DEFAULT_FRAMES  # columns of the contact sheet (``sheet=``)


@dataclass
class Inputs:
    """Resolved inputs: the two video files, and the original's job if one was given."""

    original: Path
    edited: Path
    job: Job | None = None


# --- inputs ---------------------------------------------------------------------


def resolve_original(path: str | os.PathLike) -> tuple[Path, Job | None]:
    """A video file -> (it, None); a job directory -> (its source video, the job)."""
    path = Path(path)
    if not path.is_dir():
        return _existing_video(path, "original video"), None
    job = Job.open(path)
    video = Path(job.source.path)
    if not video.is_file():
        raise InputError(
            f"the source video of job {str(path)!r} ({str(video)!r}) is missing; "
            "pass the original video file instead of the job."
        )
    if video.stat().st_size != job.source.size_bytes:
        raise InputError(
            f"the source video {str(video)!r} changed since job {str(path)!r} was made; "
            "pass the original video file instead of the job."
        )
    return video, job


def resolve_edited(path: str | os.PathLike) -> Path:
    """A video file -> it; a job directory -> the video its ``paste`` stage wrote."""
    path = Path(path)
    if not path.is_dir():
        return _existing_video(path, "edited video")
    job = Job.open(path)
    entry = job.stage("paste") or {}
    output = entry.get("output") if entry.get("done") else None
    if not output:
        raise JobError(
            f"job {str(path)!r} records no pasted video; pass the edited video file "
            "(the one `s3edit paste` wrote) as EDITED."
        )
    if not Path(output).is_file():
        raise InputError(
            f"the pasted video {output!r} recorded in job {str(path)!r} is missing; "
            "pass the edited video file as EDITED."
        )
    return Path(output)


def _existing_video(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    return path


def resolve_inputs(original: str | os.PathLike, edited: str | os.PathLike) -> Inputs:
    video, job = resolve_original(original)
    return Inputs(video, resolve_edited(edited), job)


# --- landmarks --------------------------------------------------------------------


def job_landmarks(job: Job) -> tuple[np.ndarray, np.ndarray]:
    """The align stage's smoothed landmarks (N, 68, 2) frame px and valid (N,) bool.
    N is the number of frames the job aligned (all, or the first ``--max-frames``)."""
    job.require("align", "run `s3edit align VIDEO -o JOB` first, or pass the original video.")
    track = job.read_track("landmarks", "valid")
    landmarks, valid = track["landmarks"], track["valid"]
    return landmarks.astype(np.float64), valid.astype(bool)


def detect_landmarks(info: VideoInfo, detector: str) -> tuple[np.ndarray, np.ndarray]:
    """Detect and track one face through the video with the align stage's detector and
    tracker (``s3edit.face.track``: pick the most prominent face, follow it, drop
    outliers, fill short gaps): landmarks (N, 68, 2) frame px (NaN where none) and
    valid (N,) bool. Not smoothed over time: the metrics need the face's position, not
    a steady crop."""
    from s3edit.face.detect import make_detector
    from s3edit.face.track import Detections, max_gap_frames, track_face

    det = make_detector(detector)
    per_frame = [det.detect(frame.image) for frame in console.track(
        iter_frames(info.path), "detect faces", total=info.n_frames)]
    if not any(per_frame):
        raise NoFaceError(f"no face was found in any frame of the original {str(info.path)!r}; "
                          "score needs a face to compare identities.")
    dets = Detections.from_faces(per_frame)
    track = track_face(dets, (info.width, info.height), max_gap=max_gap_frames(info.fps))
    return track.landmarks.astype(np.float64), track.valid


# --- the lockstep pass -----------------------------------------------------------


def _check_frames(n: int, what: str, edited: VideoInfo, original: VideoInfo) -> tuple[int, int]:
    """The edit must have the original's ``n`` frames and its size (clear errors
    otherwise); returns the edited size (H, W)."""
    if edited.n_frames != n:
        raise InputError(
            f"the original has {n} frames{what} but the edited video has "
            f"{edited.n_frames}; score compares frame by frame, so pass the edit made from "
            "this original."
        )
    # The writer drops an odd last row/column (4:2:0); anything else is another video.
    dw, dh = original.width - edited.width, original.height - edited.height
    if not (0 <= dw <= original.width % 2 and 0 <= dh <= original.height % 2):
        raise InputError(
            f"the original is {original.width}x{original.height} but the edited video is "
            f"{edited.width}x{edited.height}; pass the full-frame edit of this original."
        )
    return edited.height, edited.width


def _pairs(inputs: Inputs, n: int, size: tuple[int, int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, original image cropped to the edit's size, edited image), in lockstep.
    The crop drops the odd last row/column the writer left out (for a rotated odd-sized
    video that row may be the first one: a 1 px shift, below what the metrics see)."""
    h, w = size
    src_frames, edit_frames = iter_frames(inputs.original), iter_frames(inputs.edited)
    for i in range(n):
        a, b = next(src_frames, None), next(edit_frames, None)
        if a is None or b is None:
            raise InputError(
                f"{'the original' if a is None else 'the edited video'} ended after {i} "
                f"frames of {n}; score compares frame by frame, so both need all their frames."
            )
        yield i, a.image[:h, :w], b.image


@dataclass
class _Batcher:
    """Collects faces and embeds them (and predicts attributes) a batch at a time."""

    net: IdentityNet
    e_src: np.ndarray  # (N, D), filled in place
    e_edit: np.ndarray
    batch_size: int
    attr: AttributeTarget | None = None
    p_src: np.ndarray | None = None  # (N, A) when attr is given
    p_edit: np.ndarray | None = None
    _items: list = field(default_factory=list)

    def add(self, index: int, src: np.ndarray, edit: np.ndarray, lm: np.ndarray) -> None:
        self._items.append((index, src, edit, lm))
        if len(self._items) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._items:
            return
        idx = np.array([it[0] for it in self._items])
        srcs = [it[1] for it in self._items]
        edits = [it[2] for it in self._items]
        lms = np.stack([it[3] for it in self._items])
        self.e_src[idx] = self.net.embed(srcs, lms)
        self.e_edit[idx] = self.net.embed(edits, lms)
        if self.attr is not None:
            self.p_src[idx] = self.attr.predictor.predict(srcs, lms)
            self.p_edit[idx] = self.attr.predictor.predict(edits, lms)
        self._items.clear()


def score(
    original: str | os.PathLike,
    edited: str | os.PathLike,
    *,
    id_net: str | IdentityNet = DEFAULT_ID_NET,
    attr: AttributeTarget | None = None,
    config: ScoreConfig | None = None,
    sheet: str | os.PathLike | None = None,
) -> ScoreReport:
    """Score ``edited`` against ``original`` (videos or job directories; module doc).
    ``sheet``: also write a contact sheet PNG there (``s3edit.metrics.sheet``): the face
    in ``config.sheet_frames`` frames of the original above the same frames edited.

    Returns a ``ScoreReport`` with ID-Preserve, TL-ID, TG-ID, PSNR inside the face
    region (``s3edit.metrics.psnr``), warp errors (source
    baseline and edit), per-frame series, and TACR/NAPR when ``attr`` is given."""
    config = config or ScoreConfig()
    if attr is not None:
        _ = attr.index  # an unknown attribute fails before any decoding
    inputs = resolve_inputs(original, edited)
    net = id_net if not isinstance(id_net, str) else make_identity_net(id_net)
    info, edit_info = probe(inputs.original), probe(inputs.edited)
    if inputs.job is not None:
        landmarks, valid = job_landmarks(inputs.job)
        n, what, source = len(valid), " aligned in its job", "job"
        if n > info.n_frames:
            raise JobError(
                f"job {str(inputs.job.root)!r} has landmarks for {n} frames but its video "
                f"has {info.n_frames}; rerun `s3edit align` or pass the original video."
            )
    else:
        n, what, source = info.n_frames, "", "detected"
    size = _check_frames(n, what, edit_info, info)
    if inputs.job is None:
        landmarks, valid = detect_landmarks(info, config.detector)
    if not valid.any():
        raise NoFaceError(f"no face was found in the original {str(inputs.original)!r}; "
                          "score needs a face to compare identities.")
    return _measure(inputs, n, size, landmarks, valid, net, attr, config, source, sheet)


def _measure(inputs, n, size, landmarks, valid, net, attr, config, source, sheet=None) -> ScoreReport:
    batcher = _Batcher(net, np.zeros((n, net.dim), np.float32), np.zeros((n, net.dim), np.float32),
                       config.batch_size, attr)
    if attr is not None:
        a = len(attr.predictor.names)
        batcher.p_src, batcher.p_edit = np.zeros((n, a)), np.zeros((n, a))
    meter = WarpErrorMeter(config.flow_preset)
    warp = np.full((4, n), np.nan)  # source, edited, source_face, edited_face
    psnr_face = np.full(n, np.nan)
    finite = valid & np.isfinite(landmarks).all(axis=(1, 2))
    picks = set(sheets.pick_frames(finite, config.sheet_frames)) if sheet is not None else set()
    tiles: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with console.progress("score", n) as advance:
        for i, src, edit in _pairs(inputs, n, size):
            lm = landmarks[i] if valid[i] else None
            step = meter.update(src, edit, lm)
            if step is not None:
                warp[:, i] = (step.source, step.edited, step.source_face, step.edited_face)
            if valid[i]:
                batcher.add(i, src, edit, landmarks[i])
                if finite[i]:
                    psnr_face[i] = psnr(src, edit, face_region(landmarks[i], src.shape[:2]))
            if i in picks:
                box = sheets.face_box(landmarks[i], src.shape[:2])
                tiles[i] = (sheets.tile(src, box), sheets.tile(edit, box))
            advance(1)
        batcher.flush()
    if sheet is not None and tiles:
        order = sorted(tiles)
        sheets.write_sheet(sheets.contact_sheet(
            [(f"original: {inputs.original.name}", [tiles[i][0] for i in order]),
             (f"edited: {inputs.edited.name}", [tiles[i][1] for i in order])],
            [f"frame {i}" for i in order]), sheet)
    return _report(inputs, n, valid, net, batcher, warp, psnr_face, attr, source)


def _report(inputs, n, valid, net, batcher, warp, psnr_face, attr, source) -> ScoreReport:
    e_src, e_edit = batcher.e_src, batcher.e_edit
    series = idm.identity_series(e_src, e_edit, valid)
    report = ScoreReport(
        original=str(inputs.original), edited=str(inputs.edited), id_net=net.name,
        landmarks_from=source, n_frames=n, n_face_frames=int(valid.sum()),
        id_preserve=idm.id_preserve(e_src, e_edit, valid),
        tl_id=idm.tl_id(e_src, e_edit, valid), tg_id=idm.tg_id(e_src, e_edit, valid),
        warp_source=nanmean(warp[0]), warp_edited=nanmean(warp[1]),
        warp_source_face=nanmean(warp[2]), warp_edited_face=nanmean(warp[3]),
        psnr_face=nanmean(psnr_face),
        psnr_face_worst=float(np.nanmin(psnr_face)) if np.isfinite(psnr_face).any() else float("nan"),
        series=FrameSeries(series.to_source, series.adjacent_src, series.adjacent_edit,
                           warp[0], warp[1], psnr_face),
    )
    if attr is not None:
        target = attr.index
        report.attribute = attr.attribute
        report.tacr = idm.tacr(batcher.p_src, batcher.p_edit, target, attr.direction, valid)
        report.napr = idm.napr(batcher.p_src, batcher.p_edit, target, valid)
        flips = idm.label_flips(batcher.p_src, batcher.p_edit, valid)
        report.flips = {name: float(flips[a]) for a, name in enumerate(attr.predictor.names) if a != target}
    return report

