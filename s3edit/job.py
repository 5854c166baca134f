"""The job folder, and the only code that reads or writes its files.

Every stage reads and writes a job folder so stages chain, can be rerun alone and resume
after a crash (the format is described in full in ``docs/job-format.md``)::

    JOB/manifest.json                 format, version, source video facts, stage entries
    JOB/align/crops/NNNNNN.png        aligned crops (RGB), one per frame with a face
    JOB/align/track.safetensors       per-frame arrays (``TRACK_KEYS``)
    JOB/align/detections.npz          every face found (reused by a rerun), and
    JOB/align/landmarks.partial.npz   its checkpoint while align runs
    JOB/align/crops.provisional.npz   transforms of the crops made while detection ran,
                                      until the final track confirms them
    JOB/align/preview.png             contact sheet of crops (``align --preview``)
    JOB/latents/semantics.safetensors z_id, z_lnd, z_face, z_id_rep (encode)
    JOB/latents/semantics.NNNNNN.safetensors, xT.NNNNNN.safetensors  per-batch chunks
    JOB/edits/NAME/edit.json          what made an edit
    JOB/edits/NAME/crops/NNNNNN.png   its decoded crops (an edit of the whole face), or
    JOB/edits/NAME/change.NNNNNN.safetensors  its change against the plain decode
                                      (an edit confined to a region), float16

Everything is written atomically (``s3edit.paths``): an interrupted run never leaves a
half file under a final name. A stage is done when the manifest says so with the same
parameters. Coordinates are pixels with (0, 0) at the centre of the top-left pixel
(OpenCV's convention); frame indices count decoded frames from 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from s3edit.errors import JobError, OutputError
from s3edit.paths import atomic_path, describe_os_error, write_json_atomic

JOB_FORMAT = "s3edit-job"
JOB_VERSION = 1
MANIFEST = "manifest.json"
CROP_NAME = "{:06d}.png"  # frame index -> crop file name
TRACK_FILE = "track.safetensors"
# The arrays of track.safetensors (N = frames aligned; shapes in docs/job-format.md).
TRACK_KEYS = ("pts", "detected", "valid", "landmarks_raw", "landmarks", "quads_raw", "quads",
              "transforms", "crop_landmarks")
DETECTIONS_FILE = "detections.npz"
DETECTIONS_PARTIAL = "landmarks.partial.npz"
PREVIEW_FILE = "preview.png"
PROVISIONAL_FILE = "crops.provisional.npz"  # transforms of crops made while detection ran
SEMANTICS_FILE = "semantics.safetensors"
# Chunk files are named by the first frame index they hold.
LATENT_CHUNKS = {"semantics": "semantics.{:06d}.safetensors", "xT": "xT.{:06d}.safetensors"}
EDIT_FILE = "edit.json"
CHANGE_CHUNK = "change.{:06d}.safetensors"
ALIGN_HINT = "run `s3edit align VIDEO -o JOB` first."
JOB_SUFFIX = ".s3job"  # the default job folder of a video: ./<stem>.s3job


def default_job_dir(video: str | os.PathLike) -> Path:
    """Where a video's job goes when no folder is given: ``./<stem>.s3job``."""
    return Path.cwd() / f"{Path(video).stem}{JOB_SUFFIX}"


@dataclass
class AlignedFrames:
    """What encode, edit and training read from ``align``: the frames with a crop."""

    indices: np.ndarray  # (V,) int64 frame indices with valid == 1
    crop_landmarks: np.ndarray  # (V, 68, 2) float32, crop px of the align size
    size: int  # align crop side, px
    align_params: dict


class Job:
    """A job directory. ``Job.create`` starts one for a source video, ``Job.open``
    reads an existing one; stage entries are read and written through the manifest."""

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest
        self._track: dict[str, np.ndarray] = {}  # arrays of track.safetensors read or written by this Job

    # --- creation and loading -------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, source: Any) -> "Job":
        """Start a job for ``source`` (the facts ``s3edit.video.io.source_info`` records,
        a dataclass), or reopen it if ``root`` already is one for the same file. Refuses
        to take over a non-empty folder that is not a job."""
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
        made = not root.exists()
        try:
            if not made and any(root.iterdir()):
                raise OutputError(
                    f"folder {str(root)!r} is not empty and is not an s3edit job; "
                    "choose a new job folder."
                )
            root.mkdir(parents=True, exist_ok=True)
            job = cls(root, {"format": JOB_FORMAT, "version": JOB_VERSION,
                             "source": asdict(source) if is_dataclass(source) else dict(source),
                             "stages": {}})
            job.save()
        except OSError as exc:  # a read-only or full location: say which folder, and what to do
            if made and root.is_dir():
                with contextlib.suppress(OSError):
                    root.rmdir()  # only the empty folder made here
            raise OutputError(describe_os_error(exc, f"the job folder {str(root)!r}", "write",
                                                "choose a folder you can write")) from exc
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

    def reload(self) -> None:
        """Read the manifest again: another process of the run may have written it."""
        self.manifest = Job.open(self.root).manifest

    # --- source and stages ----------------------------------------------------
    @property
    def source(self) -> SimpleNamespace:
        """The source video's facts as recorded (``s3edit.video.io.SourceInfo`` fields)."""
        return SimpleNamespace(**self.manifest["source"])

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

    # --- folders ----------------------------------------------------------------
    @property
    def align_dir(self) -> Path:
        return self.root / "align"

    @property
    def crops_dir(self) -> Path:
        return self.align_dir / "crops"

    @property
    def latents_dir(self) -> Path:
        return self.root / "latents"

    def edit_dir(self, name: str) -> Path:
        return self.root / "edits" / name

    def crop_path(self, index: int, edit: str | None = None) -> Path:
        base = self.crops_dir if edit is None else self.edit_dir(edit) / "crops"
        return base / CROP_NAME.format(index)

    # --- align: the track ---------------------------------------------------------
    @property
    def track_path(self) -> Path:
        return self.align_dir / TRACK_FILE

    def has_track(self) -> bool:
        return self.track_path.is_file()

    def write_track(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Write ``track.safetensors`` (every key of ``TRACK_KEYS``)."""
        missing = [k for k in TRACK_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"track arrays lack {missing}")
        with atomic_path(self.track_path) as tmp:
            save_numpy({k: np.ascontiguousarray(arrays[k]) for k in TRACK_KEYS}, str(tmp))
        self._track = {k: np.array(arrays[k]) for k in TRACK_KEYS}

    def read_track(self, *keys: str) -> dict[str, np.ndarray]:
        """Arrays of the finished align stage's track (all of ``TRACK_KEYS`` when no
        key is named); a missing or damaged file is one error saying to rerun align.
        The file is read once per ``Job``: the stages of one run share the arrays."""
        self.require("align", ALIGN_HINT)
        keys = keys or TRACK_KEYS
        try:
            if not all(k in self._track for k in keys):
                with safe_open(str(self.track_path), framework="numpy") as f:
                    self._track.update({k: f.get_tensor(k) for k in TRACK_KEYS})
            return {k: self._track[k].copy() for k in keys}
        except (OSError, KeyError, ValueError) as exc:
            raise JobError(f"job track {str(self.track_path)!r} is unreadable ({exc}); "
                           "rerun `s3edit align`.") from exc

    def aligned_frames(self) -> AlignedFrames:
        """The frames with a crop, their crop landmarks and the crop size."""
        entry = self.require("align", ALIGN_HINT)
        track = self.read_track("valid", "crop_landmarks")
        indices = np.flatnonzero(track["valid"]).astype(np.int64)
        if indices.size == 0:
            raise JobError(f"job {str(self.root)!r} has no frame with a face to encode.")
        return AlignedFrames(indices, track["crop_landmarks"][indices].astype(np.float32),
                             int(entry["params"]["size"]), entry["params"])

    def discard_align(self) -> None:
        """Remove crops, track and preview (detections stay: they name their detector
        and are reused only by the same one)."""
        shutil.rmtree(self.crops_dir, ignore_errors=True)
        self.track_path.unlink(missing_ok=True)
        self._track = {}
        (self.align_dir / PREVIEW_FILE).unlink(missing_ok=True)
        (self.align_dir / PROVISIONAL_FILE).unlink(missing_ok=True)

    def read_detections(self, partial: bool = False) -> dict[str, np.ndarray] | None:
        """The align stage's detections (or their checkpoint) as arrays; None when
        absent or unreadable (an unreadable checkpoint is redone, not trusted)."""
        path = self.align_dir / (DETECTIONS_PARTIAL if partial else DETECTIONS_FILE)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError):
            return None

    def write_detections(self, arrays: Mapping[str, np.ndarray], partial: bool = False) -> None:
        path = self.align_dir / (DETECTIONS_PARTIAL if partial else DETECTIONS_FILE)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def remove_partial_detections(self) -> None:
        (self.align_dir / DETECTIONS_PARTIAL).unlink(missing_ok=True)

    def write_provisional(self, indices: np.ndarray, transforms: np.ndarray) -> None:
        """Frames whose crops are made before the track is final, with the transforms
        they are made with (written before the crops themselves)."""
        with atomic_path(self.align_dir / PROVISIONAL_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, index=np.asarray(indices, np.int64), transforms=np.asarray(transforms, np.float32))

    def read_provisional(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(indices, transforms) of the provisional crops; None when there are none. An
        unreadable record leaves crops of unknown transforms: they are all removed."""
        path = self.align_dir / PROVISIONAL_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data["index"], data["transforms"]
        except (OSError, ValueError, KeyError):
            shutil.rmtree(self.crops_dir, ignore_errors=True)
            path.unlink(missing_ok=True)
            return None

    def remove_provisional(self) -> None:
        (self.align_dir / PROVISIONAL_FILE).unlink(missing_ok=True)

    def remove_crops(self, indices: Iterable[int]) -> None:
        for index in indices:
            self.crop_path(int(index)).unlink(missing_ok=True)

    def write_preview(self, rgb: np.ndarray) -> Path:
        """``align/preview.png`` from an (H, W, 3) uint8 RGB image."""
        path = self.align_dir / PREVIEW_FILE
        _write_png(path, rgb)
        return path

    # --- crops ----------------------------------------------------------------------
    def has_crop(self, index: int, edit: str | None = None) -> bool:
        return self.crop_path(index, edit).is_file()

    def write_crop(self, index: int, rgb: np.ndarray, edit: str | None = None) -> None:
        """Crop of frame ``index`` (of the align stage, or of edit ``edit``) from an
        (S, S, 3) uint8 RGB image, as PNG."""
        _write_png(self.crop_path(index, edit), rgb)

    def read_crops(self, indices: Iterable[int], edit: str | None = None) -> np.ndarray:
        """Crops of frames ``indices`` -> (B, S, S, 3) uint8 RGB."""
        images = []
        for index in indices:
            path = self.crop_path(int(index), edit)
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                stage = "`s3edit align`" if edit is None else "`s3edit edit`"
                raise JobError(f"crop {str(path)!r} is missing or unreadable; rerun {stage}.")
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)

    # --- encode: latents ------------------------------------------------------------
    def latent_chunks(self, kind: str) -> list[Path]:
        """Chunk files of ``kind`` ("semantics" or "xT"), in frame order."""
        prefix = LATENT_CHUNKS[kind].split("{")[0]
        return sorted(p for p in self.latents_dir.glob(f"{prefix}*.safetensors") if p.name != SEMANTICS_FILE)

    def latent_chunk_frames(self, kind: str) -> list[np.ndarray]:
        """The frame indices of each chunk file of ``kind``, in frame order."""
        return [_chunk_index(p) for p in self.latent_chunks(kind)]

    def latent_frames_done(self, kind: str) -> set[int]:
        """Frame indices held by the chunk files of ``kind``."""
        return {int(i) for p in self.latent_chunks(kind) for i in _chunk_index(p)}

    def write_latent_chunk(self, kind: str, tensors: Mapping[str, torch.Tensor], key: str | None = None) -> None:
        """One batch's latents (``tensors["index"]`` (B,) int64 first), named by its
        first frame; ``key`` tags what they depend on (``discard_latents``)."""
        first = int(tensors["index"][0])
        _save(self.latents_dir / LATENT_CHUNKS[kind].format(first), tensors, key)

    def read_latent_chunk(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(str(path))
        except (OSError, ValueError) as exc:
            raise JobError(f"latents {str(path)!r} are unreadable ({exc}); rerun `s3edit encode`.") from exc

    def has_semantics(self) -> bool:
        return (self.latents_dir / SEMANTICS_FILE).is_file()

    def write_semantics(self, tensors: Mapping[str, torch.Tensor], key: str) -> None:
        """The merged semantics; the chunks they were merged from are removed."""
        _save(self.latents_dir / SEMANTICS_FILE, tensors, key)
        for path in self.latent_chunks("semantics"):
            path.unlink()

    def read_semantics(self) -> dict[str, torch.Tensor]:
        return self.read_latent_chunk(self.latents_dir / SEMANTICS_FILE)

    def discard_latents(self, key: str) -> None:
        """Remove every x_T chunk, and the semantics not made with ``key`` (semantics
        do not depend on the DDIM steps, so a new step count keeps them)."""
        if not self.latents_dir.is_dir():
            return
        xt_prefix = LATENT_CHUNKS["xT"].split("{")[0]
        for path in self.latents_dir.glob("*.safetensors"):
            if path.name.startswith(xt_prefix) or _key_of(path) != key:
                path.unlink()

    # --- edits ----------------------------------------------------------------------
    def edit_record(self, name: str) -> dict | None:
        """``edits/NAME/edit.json``, or None when absent or unreadable."""
        try:
            return json.loads((self.edit_dir(name) / EDIT_FILE).read_text())
        except (OSError, ValueError):
            return None

    def write_edit_record(self, name: str, record: dict) -> None:
        write_json_atomic(self.edit_dir(name) / EDIT_FILE, record)

    def discard_edit_frames(self, name: str) -> None:
        """Remove an edit's crops and changes (kept: its record)."""
        shutil.rmtree(self.edit_dir(name) / "crops", ignore_errors=True)
        for path in self.edit_dir(name).glob(CHANGE_CHUNK.split("{")[0] + "*.safetensors"):
            path.unlink()

    def has_edit(self, name: str) -> bool:
        """The edit has a record, crops or changes."""
        folder = self.edit_dir(name)
        return (folder / EDIT_FILE).is_file() or (folder / "crops").is_dir() or bool(self.change_chunks(name))

    def write_change(self, name: str, indices: Sequence[int], change: torch.Tensor) -> None:
        """What a confined edit changed on frames ``indices``: (B, 3, S, S) in units
        of [-1, 1] images at the align crop size, kept as float16."""
        index = torch.as_tensor(np.asarray(indices, np.int64))
        _save(self.edit_dir(name) / CHANGE_CHUNK.format(int(index[0])),
              {"index": index, "change": change.detach().to(torch.float16)})

    def change_chunks(self, name: str) -> list[Path]:
        return sorted(self.edit_dir(name).glob(CHANGE_CHUNK.split("{")[0] + "*.safetensors"))

    def changed_frames(self, name: str) -> set[int]:
        return {int(i) for p in self.change_chunks(name) for i in _chunk_index(p)}

    def edit_frames_done(self, name: str) -> set[int]:
        """Frames an edit has written, as crops or as changes."""
        crops = self.edit_dir(name) / "crops"
        done = {int(p.stem) for p in crops.glob("*.png")} if crops.is_dir() else set()
        return done | self.changed_frames(name)

    def changes(self, name: str) -> "ChangeReader":
        return ChangeReader(self, name)


class ChangeReader:
    """A confined edit's changes by frame index, read chunk by chunk as frames ask for
    them (one chunk in memory): ``reader(i)`` -> (S, S, 3) float32 RGB change in
    [0, 255] units, or None for a frame the edit has none of."""

    def __init__(self, job: Job, name: str):
        self.job = job
        self.chunks = [(p, _chunk_index(p)) for p in job.change_chunks(name)]
        self.held: tuple[np.ndarray, np.ndarray] | None = None  # (index, change)

    def __call__(self, index: int) -> np.ndarray | None:
        if self.held is None or index not in self.held[0]:
            path = next((p for p, idx in self.chunks if index in idx), None)
            if path is None:
                return None
            t = self.job.read_latent_chunk(path)
            change = (t["change"].float() * 127.5).permute(0, 2, 3, 1).numpy()
            self.held = (t["index"].numpy(), change)
        row = int(np.flatnonzero(self.held[0] == index)[0])
        return self.held[1][row]


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def _save(path: Path, tensors: Mapping[str, torch.Tensor], key: str | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"key": key} if key else None)


def _chunk_index(path: Path) -> np.ndarray:
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("index")


def _key_of(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:  # a damaged file is as good as none
        return None
