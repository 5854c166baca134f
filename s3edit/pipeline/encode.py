"""The ``encode`` stage: an aligned job -> per-frame latents of a weight set.

    latents = encode_job("clip.job", weights="dva", steps=100)

Per valid frame (a crop from ``align``), in batches so memory is bounded by the batch:

1. semantics: z_id (the weight set's identity encoder on the crop), z_lnd (its landmark
   net, or the job's ``crop_landmarks`` for models trained on external landmarks);
2. the clip identity z_id_rep = l2norm(mean_i z_id_i) and z_face_i = fuse(z_id_rep,
   z_lnd_i) (DVA's editing script averages z_id over the clip; it does not re-normalise
   the mean, we do, so that the reconstruction code and an edit at scale 0 —
   whose rule ends in l2norm — are the same vector);
3. x_T_i = DDIM inversion of crop i under z_face_i (``s3edit.model.ddim``).

Everything goes to ``JOB/latents/`` (format in ``s3edit.job``): small per-chunk files
written atomically, so an interrupted run resumes at the next chunk. The manifest entry
``stages.encode.params`` holds what the latents depend on (weight-set fingerprint,
steps, model resolution, the align parameters); a rerun with the same params is skipped,
other params discard the latents and encode again.

Also here, for ``score``: ``WeightSetFaces``, the weight set's identity encoder (ArcFace
for DVA) as an ``IdentityNet`` plus its attribute heads as an ``AttributePredictor``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from s3edit import console
from s3edit.errors import InputError, JobError
from s3edit.face import align as fa
from s3edit.face.identity import IdentityNet
from s3edit.job import Job
from s3edit.model import ddim
from s3edit.model.dva import DVA
from s3edit.weights.registry import resolve_weights
from s3edit.weights.weightset import CLASSIFIER_FILE, CONFIG_FILE, MODEL_FILE, S3_FILE, WeightSet, load_weight_set
from s3edit.paths import atomic_path

STAGE = "encode"
SEMANTICS_FILE = "semantics.safetensors"
SEMANTICS_CHUNK = "semantics.{:06d}.safetensors"  # partial z_id/z_lnd, merged when complete
XT_CHUNK = "xT.{:06d}.safetensors"  # number = first frame index in the chunk
DEFAULT_BATCH = 8
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# --- devices, weights, crops: shared with the edit stage --------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but this machine has no usable CUDA GPU; "
                         "use --device cpu (or auto).")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> ddim.Precision:
    """``auto`` -> bf16 autocast on CUDA, fp32 on CPU; fp16 on CPU is refused."""
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}.")
    if name == "auto":
        return ddim.default_precision(device)
    if name == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU.")
    return name  # type: ignore[return-value]


def check_steps(steps: int) -> int:
    if not 1 <= steps <= ddim.NUM_TRAIN_TIMESTEPS:
        raise InputError(f"--steps must be between 1 and {ddim.NUM_TRAIN_TIMESTEPS}, got {steps}.")
    return steps


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    return batch_size


def weights_fingerprint(folder: Path) -> str:
    """Identity of a weight set's contents: sha256 over config.json and the size and
    mtime of its tensor files (hashing a 760 MB model on every run would cost seconds;
    any rewrite of the files changes their mtime)."""
    h = hashlib.sha256((folder / CONFIG_FILE).read_bytes())
    for name in (MODEL_FILE, CLASSIFIER_FILE, S3_FILE):
        path = folder / name
        if path.is_file():
            st = path.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class LoadedWeights:
    folder: Path
    fingerprint: str
    ws: WeightSet

    @property
    def model(self) -> DVA:
        return self.ws.model

    @property
    def size(self) -> int:
        return self.ws.config.image_size


def load_weights(weights: str | os.PathLike | None, device: torch.device) -> LoadedWeights:
    """``--weights NAME|PATH`` (None: the registry's default) -> the loaded set."""
    folder = resolve_weights(weights)
    return LoadedWeights(folder, weights_fingerprint(folder), load_weight_set(folder, device=device))


@dataclass
class AlignedFrames:
    """What encode/edit read from ``align``: the frames that have a crop."""

    indices: np.ndarray  # (V,) int64 frame indices with valid == 1
    crop_landmarks: np.ndarray  # (V, 68, 2) float32, crop px of the align size
    size: int  # align crop side, px
    align_params: dict


def aligned_frames(job: Job) -> AlignedFrames:
    entry = job.require("align", "run `s3edit align VIDEO -o JOB` first.")
    try:
        with safe_open(str(job.track_path), framework="numpy") as f:
            valid, lms = f.get_tensor("valid").astype(bool), f.get_tensor("crop_landmarks")
    except (OSError, KeyError, ValueError) as exc:
        raise JobError(f"job track {str(job.track_path)!r} is unreadable ({exc}); rerun `s3edit align`.") from exc
    indices = np.flatnonzero(valid).astype(np.int64)
    if indices.size == 0:
        raise JobError(f"job {str(job.root)!r} has no frame with a face to encode.")
    return AlignedFrames(indices, lms[indices].astype(np.float32), int(entry["params"]["size"]), entry["params"])


def read_crops(paths: list[Path], size: int) -> torch.Tensor:
    """Crop PNGs -> (B, 3, size, size) float32 in [-1, 1]. Other sizes are resized with
    cv2 INTER_AREA, as the training data loader (``s3edit.train.data``) does."""
    images = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise JobError(f"crop {str(path)!r} is missing or unreadable; rerun `s3edit align`.")
        if bgr.shape[0] != size:
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def landmarks_unit(crop_landmarks: np.ndarray, size: int) -> torch.Tensor:
    """(B, 68, 2) crop px (pixel-centre origin) of a ``size`` crop -> [0, 1] crop
    coordinates, the convention of ``DVA.z_lnd(landmarks=...)`` and of training."""
    return torch.from_numpy((np.asarray(crop_landmarks, np.float32) + 0.5) / size)


def batches(items: np.ndarray, size: int) -> list[np.ndarray]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- semantics ---------------------------------------------------------------------------


@torch.no_grad()
def frame_semantics(model: DVA, crops: torch.Tensor, landmarks01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """crops (B, 3, S, S) [-1, 1] at the model's size, landmarks01 (B, 68, 2) in [0, 1]
    -> z_id (B, id_dim), z_lnd (B, 102). The job's landmarks are used only by models
    whose config says ``lnd_encoder: external``; DVA's own use its landmark net."""
    external = model.config.lnd_encoder == "external"
    z_id = model.z_id(crops, landmarks01.to(crops.device))
    z_lnd = model.z_lnd(crops, landmarks01.to(crops.device) if external else None)
    return z_id.float(), z_lnd.float()


def clip_identity(z_id: torch.Tensor) -> torch.Tensor:
    """z_id_rep = l2norm(mean over frames): (V, D) -> (D,)."""
    return F.normalize(z_id.double().mean(0), dim=0).float()


# --- the latents on disk -----------------------------------------------------------------


@dataclass
class Latents:
    """``latents/semantics.safetensors`` (V = frames with a crop) + the x_T chunk files."""

    indices: torch.Tensor  # (V,) int64 frame indices
    z_id: torch.Tensor  # (V, id_dim)
    z_lnd: torch.Tensor  # (V, 102)
    z_face: torch.Tensor  # (V, face_dim) = fuse(z_id_rep, z_lnd)
    z_id_rep: torch.Tensor  # (id_dim,)
    chunks: list[Path]  # x_T chunk files in frame order

    def rows(self, frames: torch.Tensor) -> torch.Tensor:
        """Positions in the V arrays of the given frame indices."""
        return torch.searchsorted(self.indices, frames)


def _chunk_files(folder: Path, pattern: str) -> list[Path]:
    prefix, suffix = pattern.split("{")[0], ".safetensors"
    return sorted(p for p in folder.glob(f"{prefix}*{suffix}") if p.name != SEMANTICS_FILE)


def _chunk_indices(path: Path) -> np.ndarray:
    with safe_open(str(path), framework="numpy") as f:
        return f.get_tensor("index")


def _done_frames(files: list[Path]) -> set[int]:
    return {int(i) for p in files for i in _chunk_indices(p)}


def _save(path: Path, tensors: dict[str, torch.Tensor], key: str | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"key": key} if key else None)


def _key_of(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:  # a damaged file is as good as none
        return None


def semantics_key(params: dict) -> str:
    """What z_id/z_lnd/z_face depend on: every encode param except the DDIM steps."""
    rest = {k: v for k, v in params.items() if k != "steps"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]


def load_latents(job: Job) -> Latents:
    """The finished encode stage's latents (x_T stays on disk: ``iter_x_T``)."""
    job.require(STAGE, "run `s3edit encode JOB` first.")
    folder = job.latents_dir
    try:
        sem = load_file(str(folder / SEMANTICS_FILE))
    except (OSError, ValueError) as exc:
        raise JobError(f"latents of job {str(job.root)!r} are unreadable ({exc}); rerun `s3edit encode`.") from exc
    return Latents(sem["index"], sem["z_id"], sem["z_lnd"], sem["z_face"], sem["z_id_rep"],
                   _chunk_files(folder, XT_CHUNK))


def iter_x_T(latents: Latents):
    """Yield (frame indices (B,) int64, x_T (B, 3, S, S) float32) chunk by chunk."""
    for path in latents.chunks:
        t = load_file(str(path))
        yield t["index"], t["x_T"].float()


# --- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeParams:
    """What the latents depend on (stored in the manifest)."""

    weights: str  # weights_fingerprint
    steps: int
    image_size: int  # model resolution
    align: dict  # the align stage's params


def encode_job(
    job: Job | str | os.PathLike,
    weights: str | os.PathLike | None = None,
    *,
    steps: int = ddim.DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    precision: str = "auto",
    loaded: LoadedWeights | None = None,
) -> Job:
    """Encode every aligned frame of ``job`` (module docstring). ``loaded`` reuses
    weights already loaded (``edit VIDEO`` loads them once for both stages)."""
    job = job if isinstance(job, Job) else Job.open(job)
    check_steps(steps)
    check_batch_size(batch_size)
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    frames = aligned_frames(job)
    lw = loaded or load_weights(weights, dev)
    params = asdict(EncodeParams(lw.fingerprint, steps, lw.size, frames.align_params))
    if job.is_done(STAGE, params) and (job.latents_dir / SEMANTICS_FILE).is_file():
        console.note(f"encode: {job.root} is already encoded with these weights and steps; nothing to do.")
        return job
    entry = job.stage(STAGE)
    key = semantics_key(params)
    if entry is None or entry.get("params") != params:
        _discard(job, key)
        job.start_stage(STAGE, params)
    started = time.perf_counter()
    _semantics_pass(job, lw, frames, batch_size, dev, key)
    latents = _load_semantics(job)
    _x_T_pass(job, lw, frames, latents, steps, batch_size, dev, prec)
    job.finish_stage(STAGE, frames=int(len(frames.indices)), weights_name=lw.ws.name,
                     weights_path=str(lw.folder.resolve()), device=str(dev), precision=prec,
                     seconds=round(time.perf_counter() - started, 3))
    return job


def _discard(job: Job, key: str) -> None:
    """Remove latents of other params; semantics made with the same ``key`` (only the
    steps changed) are kept, so a new step count costs the DDIM inversion only."""
    folder = job.latents_dir
    if folder.is_dir():
        for path in folder.glob("*.safetensors"):
            if path.name.startswith(XT_CHUNK.split("{")[0]) or _key_of(path) != key:
                path.unlink()


def _semantics_pass(job: Job, lw: LoadedWeights, frames: AlignedFrames, batch_size: int, dev, key: str) -> None:
    folder = job.latents_dir
    if (folder / SEMANTICS_FILE).is_file():
        return
    parts = _chunk_files(folder, SEMANTICS_CHUNK)
    done = _done_frames(parts)
    todo = np.array([i for i in range(len(frames.indices)) if int(frames.indices[i]) not in done], np.int64)
    with console.progress("encode: identity + landmarks", len(frames.indices)) as advance:
        advance(len(done))
        for rows in batches(todo, batch_size):
            idx = frames.indices[rows]
            crops = read_crops([job.crop_path(int(i)) for i in idx], lw.size).to(dev)
            z_id, z_lnd = frame_semantics(lw.model, crops, landmarks_unit(frames.crop_landmarks[rows], frames.size))
            _save(folder / SEMANTICS_CHUNK.format(int(idx[0])),
                  {"index": torch.from_numpy(idx), "z_id": z_id, "z_lnd": z_lnd}, key)
            advance(len(rows))
    _merge_semantics(job, lw.model, dev, key)


@torch.no_grad()
def _merge_semantics(job: Job, model: DVA, dev, key: str) -> None:
    folder = job.latents_dir
    parts = [load_file(str(p)) for p in _chunk_files(folder, SEMANTICS_CHUNK)]
    index = torch.cat([p["index"] for p in parts])
    order = torch.argsort(index)
    z_id = torch.cat([p["z_id"] for p in parts])[order]
    z_lnd = torch.cat([p["z_lnd"] for p in parts])[order]
    z_id_rep = clip_identity(z_id)
    z_face = model.fuse(z_id_rep.to(dev), z_lnd.to(dev)).float()
    _save(folder / SEMANTICS_FILE, {"index": index[order], "z_id": z_id, "z_lnd": z_lnd,
                                    "z_face": z_face, "z_id_rep": z_id_rep}, key)
    for p in _chunk_files(folder, SEMANTICS_CHUNK):
        p.unlink()


def _load_semantics(job: Job) -> Latents:
    sem = load_file(str(job.latents_dir / SEMANTICS_FILE))
    return Latents(sem["index"], sem["z_id"], sem["z_lnd"], sem["z_face"], sem["z_id_rep"], [])


def _x_T_pass(job, lw, frames, latents, steps, batch_size, dev, prec) -> None:
    folder = job.latents_dir
    done = _done_frames(_chunk_files(folder, XT_CHUNK))
    todo = np.array([i for i in range(len(frames.indices)) if int(frames.indices[i]) not in done], np.int64)
    n = len(frames.indices)
    with console.progress(f"encode: DDIM inversion ({steps} steps)", n * steps) as advance:
        advance(len(done) * steps)
        for rows in batches(todo, batch_size):
            idx = frames.indices[rows]
            crops = read_crops([job.crop_path(int(i)) for i in idx], lw.size).to(dev)
            z_face = latents.z_face[latents.rows(torch.from_numpy(idx))].to(dev)
            x_T = ddim.ddim_encode(lw.model, crops, z_face, steps, prec,
                                   callback=lambda k, b=len(rows): advance(k * b))
            _save(folder / XT_CHUNK.format(int(idx[0])), {"index": torch.from_numpy(idx), "x_T": x_T.half()})


# --- the weight set's face nets, for score ---------------------------------------------


class WeightSetFaces(IdentityNet):
    """A weight set's identity encoder as an ``IdentityNet`` (score's ID metrics with
    the imported ArcFace) and its attribute heads as an ``AttributePredictor``
    (score's TACR/NAPR). Faces are cut from full frames by the align stage's FFHQ quad
    at the model's resolution, as DVA's encoder sees them."""

    def __init__(self, lw: LoadedWeights, device: torch.device | None = None, batch_size: int = 16):
        self.lw = lw
        self.device = device or next(lw.model.parameters()).device
        self.dim = lw.ws.config.id_dim
        self.name = f"{lw.ws.config.id_encoder} z_id of weight set {lw.ws.name or lw.folder.name!r}"
        self.names = list(lw.ws.classifier.names) if lw.ws.classifier is not None else []
        self.batch_size = batch_size

    def crops(self, images, landmarks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Full frames (N, H, W, 3) uint8 + landmarks (N, 68, 2) frame px -> crops
        (N, 3, S, S) in [-1, 1] and their landmarks (N, 68, 2) in [0, 1]."""
        size = self.lw.size
        landmarks = np.asarray(landmarks, np.float64)
        transforms = fa.quad_to_transform(fa.quad_from_landmarks(landmarks), size)
        faces = np.stack([fa.warp_crop(im, t, size) for im, t in zip(images, transforms)])
        crop_landmarks = fa.apply_transform(transforms, landmarks)
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x, landmarks_unit(crop_landmarks, size)

    @torch.no_grad()
    def z_id(self, images, landmarks: np.ndarray) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            x, lnd01 = self.crops(images[start:start + self.batch_size], landmarks[start:start + self.batch_size])
            out.append(self.lw.model.z_id(x.to(self.device), lnd01.to(self.device)).float().cpu())
        return torch.cat(out)

    def embed(self, images, landmarks: np.ndarray) -> np.ndarray:
        """IdentityNet: (N, id_dim) float32 unit rows."""
        return F.normalize(self.z_id(list(images), landmarks), dim=1).numpy()

    def predict(self, images, landmarks: np.ndarray) -> np.ndarray:
        """AttributePredictor: (N, A) logits of the weight set's classifier on z_id."""
        classifier = self.lw.ws.classifier
        if classifier is None:
            raise InputError(f"weight set {str(self.lw.folder)!r} has no attribute classifier; "
                             "TACR/NAPR need one (import DVA with --classifier).")
        z = self.z_id(list(images), landmarks)
        return attribute_logits(classifier, z).numpy()


def attribute_logits(classifier, z_id: torch.Tensor) -> torch.Tensor:
    """DVA's attribute prediction: classifier on normalised z_id, (N, D) -> (N, A)."""
    return classifier.logits(z_id.to(classifier.weight))
