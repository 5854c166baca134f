"""The job directory: the one place its format is written down.

Every stage reads and writes a job directory so stages chain, can be rerun alone, and
resume after a crash. All files are written atomically (``s3edit.paths``); a stage is
done when the manifest says so with the same parameters, and a rerun then skips it.

Layout (format ``s3edit-job``, version ``JOB_VERSION``)::

    JOB/
      manifest.json           format, version, source video facts, one entry per stage
                              ({"params": {...}, "done": bool, ...stage facts})
      align/
        crops/000000.png      aligned square crops (RGB, size x size), one per frame
                              index; frames without a face (valid == 0) have none
        track.safetensors     per-frame arrays, N = frames aligned (stages.align.frames:
                              all of the video's unless align ran with max_frames):
          pts              (N,)      int64  presentation timestamp (source time base)
          detected         (N,)      uint8  1 where the detector found the tracked face
                                            (0 for a detection rejected as an outlier;
                                            its landmarks stay in landmarks_raw)
          valid            (N,)      uint8  1 where the frame has a crop (detected, or a
                                            short gap filled); 0 = leave frame untouched
          landmarks_raw    (N, 68, 2) f32   detector landmarks, frame pixels (NaN if none)
          landmarks        (N, 68, 2) f32   gap-filled, temporally smoothed landmarks
          quads_raw        (N, 4, 2)  f32   FFHQ quad from the raw landmarks (frame px;
                                            corners top-left, bottom-left, bottom-right,
                                            top-right as in FFHQ's recipe)
          quads            (N, 4, 2)  f32   smoothed quad: the one the crops use
          transforms       (N, 3, 3)  f32   frame px -> crop px (homography, affine here;
                                            NaN where valid == 0, like quads, landmarks)
          crop_landmarks   (N, 68, 2) f32   smoothed landmarks in crop pixels
        landmarks.partial.npz detection checkpoint while align runs (resume point)
        detections.npz        every face the detector found in every frame (frame, boxes,
                              landmarks, scores, pts, detector name): reused by a rerun
                              with other tracking/crop parameters and the same detector
        preview.png           contact sheet of crops with landmarks (--preview)
      latents/                (encode; V = frames with valid == 1, in frame order)
        semantics.safetensors index (V,) int64, z_id (V, id_dim), z_lnd (V, 102),
                              z_face (V, face_dim) = fuse(z_id_rep, z_lnd), z_id_rep
                              (id_dim,) = l2norm(mean of z_id); float32
        semantics.NNNNNN.safetensors  z_id/z_lnd of one batch while encode runs (resume
                              points; merged into semantics.safetensors, then removed)
        xT.NNNNNN.safetensors index (B,) int64, x_T (B, 3, S, S) float16: DDIM noise maps
                              of one batch (S = model size), NNNNNN = its first frame
      edits/<name>/crops/      edited crops, same numbering as align/crops (an edit
                              confined to a region: the original crop plus its change)
      edits/<name>/edit.json   what made them (attributes, scales, weights, steps)

The manifest's ``stages.paste`` entry (written by ``paste``) records ``output`` (the
absolute path of the video it wrote), ``frames``, ``frames_pasted`` and
``frames_untouched``; ``score JOB`` reads ``output`` from there.

Coordinates are pixels with (0, 0) at the centre of the top-left pixel (OpenCV's
convention). Frame indices count decoded frames from 0.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s3edit.errors import JobError, OutputError
from s3edit.paths import write_json_atomic

JOB_FORMAT = "s3edit-job"
JOB_VERSION = 1
MANIFEST = "manifest.json"
CROP_NAME = "{:06d}.png"  # frame index -> crop file name


@dataclass
class SourceInfo:
    """Facts about the source video that later stages (paste, score) rely on."""

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


class Job:
    """A job directory. ``Job.create`` starts one for a source video, ``Job.open``
    reads an existing one; stage entries are read and written through the manifest."""

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    # --- creation and loading -------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, source: SourceInfo) -> "Job":
        """Start a job for ``source``, or reopen it if ``root`` already is one for the
        same file. Refuses to take over a non-empty folder that is not a job."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise OutputError(f"job path {str(root)!r} is a file; give a folder for the job.")
        if (root / MANIFEST).exists():
            job = cls.open(root)
            same = (
                job.source.size_bytes == source.size_bytes
                and job.source.n_frames == source.n_frames
                and abs(job.source.mtime - source.mtime) < 1e-3
            )
            if not same:
                raise JobError(
                    f"job {str(root)!r} was made from another video ({job.source.path}); "
                    "use a new job folder."
                )
            return job
        if root.exists() and any(root.iterdir()):
            raise OutputError(
                f"folder {str(root)!r} is not empty and is not an s3edit job; "
                "choose a new job folder."
            )
        root.mkdir(parents=True, exist_ok=True)
        job = cls(root, {"format": JOB_FORMAT, "version": JOB_VERSION,
                         "source": asdict(source), "stages": {}})
        job.save()
        return job

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Job":
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            raise JobError(
                f"{str(root)!r} is not an s3edit job folder (no {MANIFEST}); "
                "make one with `s3edit align VIDEO -o JOB`."
            )
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise JobError(f"job manifest {str(path)!r} is unreadable ({exc}).") from exc
        if manifest.get("format") != JOB_FORMAT:
            raise JobError(f"{str(path)!r} is not an s3edit job manifest.")
        if manifest.get("version") != JOB_VERSION:
            raise JobError(
                f"job {str(root)!r} has format version {manifest.get('version')}, this "
                f"s3edit reads version {JOB_VERSION}; rerun `s3edit align` into a new folder."
            )
        return cls(root, manifest)

    @staticmethod
    def is_job(path: str | os.PathLike) -> bool:
        return (Path(path) / MANIFEST).is_file()

    def save(self) -> None:
        write_json_atomic(self.root / MANIFEST, self.manifest)

    # --- source and stages ----------------------------------------------------
    @property
    def source(self) -> SourceInfo:
        return SourceInfo(**self.manifest["source"])

    def stage(self, name: str) -> dict[str, Any] | None:
        return self.manifest["stages"].get(name)

    def is_done(self, name: str, params: dict[str, Any] | None = None) -> bool:
        """Done, and (when ``params`` is given) with exactly these parameters."""
        entry = self.stage(name)
        if not entry or not entry.get("done"):
            return False
        return params is None or entry.get("params") == params

    def start_stage(self, name: str, params: dict[str, Any]) -> None:
        """Record that ``name`` runs with ``params``. Work from a run with other
        parameters is no longer valid; the stage decides what to discard."""
        self.manifest["stages"][name] = {"params": params, "done": False}
        self.save()

    def finish_stage(self, name: str, **facts: Any) -> None:
        entry = self.manifest["stages"].setdefault(name, {"params": {}})
        entry.update(facts)
        entry["done"] = True
        self.save()

    def require(self, name: str, hint: str) -> dict[str, Any]:
        """The stage's entry, or one error saying what to run first."""
        entry = self.stage(name)
        if not entry or not entry.get("done"):
            raise JobError(f"job {str(self.root)!r} has no finished {name} stage; {hint}")
        return entry

    # --- paths ----------------------------------------------------------------
    @property
    def align_dir(self) -> Path:
        return self.root / "align"

    @property
    def crops_dir(self) -> Path:
        return self.align_dir / "crops"

    @property
    def track_path(self) -> Path:
        return self.align_dir / "track.safetensors"

    @property
    def latents_dir(self) -> Path:
        return self.root / "latents"

    def edit_dir(self, name: str) -> Path:
        return self.root / "edits" / name

    def crop_path(self, index: int, edit: str | None = None) -> Path:
        base = self.crops_dir if edit is None else self.edit_dir(edit) / "crops"
        return base / CROP_NAME.format(index)
