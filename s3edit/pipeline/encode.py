"""The ``encode`` stage: an aligned job -> per-frame latents of a weight set.

    encode_job("clip.job", run_options("dva", steps=100))

Per valid frame (a crop from ``align``), in batches so memory is bounded by the batch:

1. semantics: z_id (the weight set's identity encoder on the crop), z_lnd (its landmark
   net, or the job's ``crop_landmarks`` for models trained on external landmarks);
2. the clip identity z_id_rep and z_face_i = fuse(z_id_rep, z_lnd_i). The weight set's
   identity rule (``RunOptions.identity``, docs/edit.md) makes z_id_rep: ``mean``, the
   plain mean_i z_id_i, as DVA's editing script (sets imported from DVA), or
   ``l2norm_mean``, l2norm(mean_i z_id_i), s3edit's (sets it trained), which puts the
   code on the unit sphere the frames' codes and the edit rule's results live on;
3. x_T_i = DDIM inversion of crop i under z_face_i with ``RunOptions.sampler`` and
   ``RunOptions.fixed_point`` corrections per step (``s3edit.model.ddim``, docs/sampler.md).

Everything goes to ``JOB/latents/`` (``s3edit.job``, docs/job-format.md): small per-chunk files
written atomically, so an interrupted run resumes at the next chunk. The manifest entry
``stages.encode.params`` holds what the latents depend on (weight-set fingerprint,
steps, sampler, fixed-point corrections when there are any, identity rule, model
resolution, the align parameters); a rerun with the same params is skipped, other params
discard the latents and encode again (other steps, sampler or corrections: x_T only, the
semantics are kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit import console
from s3edit.job import AlignedFrames, Job
from s3edit.model import ddim
from s3edit.model.dva import DVA
from s3edit.model.frames import landmarks_unit, to_model
from s3edit.pipeline.options import ENCODE_STAGE as STAGE
from s3edit.pipeline.options import IdentityRule, RunOptions
from s3edit.pipeline.shard import Shard, joined


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


def clip_identity(z_id: torch.Tensor, rule: str | IdentityRule = IdentityRule.l2norm_mean) -> torch.Tensor:
    """z_id_rep from the frames' codes (V, D) -> (D,): the mean over frames, then
    l2-normalised under ``l2norm_mean`` (s3edit's) and left as it is under ``mean``
    (DVA's)."""
    mean = z_id.double().mean(0)
    if IdentityRule(rule) is IdentityRule.mean:
        return mean.float()
    return F.normalize(mean, dim=0).float()


# --- the latents -------------------------------------------------------------------------


@dataclass
class Latents:
    """The encode stage's results (V = frames with a crop); x_T stays in its chunk files
    (``iter_x_T``)."""

    indices: torch.Tensor  # (V,) int64 frame indices
    z_id: torch.Tensor  # (V, id_dim)
    z_lnd: torch.Tensor  # (V, 102)
    z_face: torch.Tensor  # (V, face_dim) = fuse(z_id_rep, z_lnd)
    z_id_rep: torch.Tensor  # (id_dim,)
    job: Job | None = None

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], job: Job | None = None) -> "Latents":
        return cls(t["index"], t["z_id"], t["z_lnd"], t["z_face"], t["z_id_rep"], job)

    def rows(self, frames: torch.Tensor) -> torch.Tensor:
        """Positions in the V arrays of the given frame indices."""
        return torch.searchsorted(self.indices, frames)

    @property
    def chunks(self) -> list[Path]:
        """The x_T chunk files, in frame order."""
        return self.job.latent_chunks("xT") if self.job is not None else []


X_T_ONLY = ("steps", "sampler", "fixed_point")  # encode params that make x_T only


def describe_fixed_point(params: dict) -> str:
    """``, K fixed-point correction(s) per step`` for encode params that name K > 0, else ''."""
    k = params.get("fixed_point", 0)
    return f", {k} fixed-point correction{'s' if k > 1 else ''} per step" if k else ""


def semantics_key(params: dict) -> str:
    """What z_id/z_lnd/z_face depend on: every encode param except ``X_T_ONLY``."""
    rest = {k: v for k, v in params.items() if k not in X_T_ONLY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:16]


def load_latents(job: Job) -> Latents:
    """The finished encode stage's latents."""
    job.require(STAGE, "run `s3edit encode JOB` first.")
    return Latents.from_tensors(job.read_semantics(), job)


def iter_x_T(latents: Latents):
    """Yield (frame indices (B,) int64, x_T (B, 3, S, S) float32) chunk by chunk."""
    for path in latents.chunks:
        t = latents.job.read_latent_chunk(path)
        yield t["index"], t["x_T"].float()


# --- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeParams:
    """What the latents depend on (stored in the manifest)."""

    weights: str  # weights_fingerprint
    steps: int
    image_size: int  # model resolution
    align: dict  # the align stage's params
    sampler: str  # the DDIM sampler that made x_T
    identity: str  # the identity rule that made z_id_rep


def encode_job(job: Job | str | os.PathLike, run: RunOptions) -> Latents:
    """Encode every aligned frame of ``job`` (module docstring) with ``run``'s weights,
    steps, sampler and identity rule; returns the latents (read from the job when it
    is already encoded with them)."""
    job = job if isinstance(job, Job) else Job.open(job)
    shard = joined()
    frames = job.aligned_frames()
    lw = run.weights
    params = asdict(EncodeParams(lw.fingerprint, run.steps, lw.size, frames.align_params, run.sampler.value,
                                 run.identity.value))
    if run.fixed_point:  # named only when used, so jobs encoded without corrections stay valid
        params["fixed_point"] = run.fixed_point
    if job.is_done(STAGE, params) and job.has_semantics():
        console.note(f"encode: {job.root} is already encoded with these weights, steps, sampler and "
                     "corrections; nothing to do.")
        return load_latents(job)
    entry = job.stage(STAGE)
    key = semantics_key(params)
    shard.barrier()  # every process has read the manifest before rank 0 changes it
    if shard.first and (entry is None or entry.get("params") != params):
        job.discard_latents(key)
        job.start_stage(STAGE, params)
    shard.sync(job)
    started = time.perf_counter()
    latents = _semantics_pass(job, run, frames, key, shard)
    _x_T_pass(job, run, frames, latents, shard)
    shard.barrier()
    if shard.first:
        job.finish_stage(STAGE, frames=int(len(frames.indices)), weights_name=lw.ws.name,
                         weights_path=str(lw.folder.resolve()), device=str(run.device), precision=run.precision,
                         seconds=round(time.perf_counter() - started, 3))
    shard.sync(job)
    return latents


def _model_crops(job: Job, frames: AlignedFrames, rows: np.ndarray, run: RunOptions) -> torch.Tensor:
    return to_model(job.read_crops(frames.indices[rows]), run.weights.size).to(run.device)


def _my_batches(frames: AlignedFrames, done: set[int], batch_size: int, shard: Shard) -> tuple[list[np.ndarray], int]:
    """This process's batches of rows still to do, and how many frames its share holds:
    the clip's rows in batches of ``batch_size``, shared out over the processes, less
    the frames already written."""
    mine = shard.share(batches(np.arange(len(frames.indices)), batch_size))
    written = np.fromiter(done, np.int64, len(done))
    todo = [rows[~np.isin(frames.indices[rows], written)] for rows in mine]
    return [rows for rows in todo if len(rows)], sum(len(rows) for rows in mine)


def _semantics_pass(job: Job, run: RunOptions, frames: AlignedFrames, key: str, shard: Shard) -> Latents:
    """z_id, z_lnd per frame in chunks (resumable), merged with z_id_rep and z_face."""
    if job.has_semantics():
        return Latents.from_tensors(job.read_semantics(), job)
    todo, share = _my_batches(frames, job.latent_frames_done("semantics"), run.batch_size, shard)
    with console.progress("encode: identity + landmarks", share) as advance:
        advance(share - sum(len(rows) for rows in todo))
        for rows in todo:
            idx = frames.indices[rows]
            z_id, z_lnd = frame_semantics(run.weights.model, _model_crops(job, frames, rows, run),
                                          landmarks_unit(frames.crop_landmarks[rows], frames.size))
            job.write_latent_chunk("semantics", {"index": torch.from_numpy(idx), "z_id": z_id, "z_lnd": z_lnd}, key)
            advance(len(rows))
    shard.barrier()  # the clip identity is merged from every process's frames
    latents = _merge_semantics(job, run, key) if shard.first else None
    shard.barrier()
    return latents or Latents.from_tensors(job.read_semantics(), job)


@torch.no_grad()
def _merge_semantics(job: Job, run: RunOptions, key: str) -> Latents:
    parts = [job.read_latent_chunk(p) for p in job.latent_chunks("semantics")]
    index = torch.cat([p["index"] for p in parts])
    order = torch.argsort(index)
    z_id = torch.cat([p["z_id"] for p in parts])[order]
    z_lnd = torch.cat([p["z_lnd"] for p in parts])[order]
    z_id_rep = clip_identity(z_id, run.identity)
    z_face = run.weights.model.fuse(z_id_rep.to(run.device), z_lnd.to(run.device)).float().cpu()
    tensors = {"index": index[order], "z_id": z_id, "z_lnd": z_lnd, "z_face": z_face, "z_id_rep": z_id_rep}
    job.write_semantics(tensors, key)
    return Latents.from_tensors(tensors, job)


def _x_T_pass(job: Job, run: RunOptions, frames: AlignedFrames, latents: Latents, shard: Shard) -> None:
    todo, n = _my_batches(frames, job.latent_frames_done("xT"), run.batch_size, shard)
    passes = ddim.encode_passes(run.steps, run.sampler.value, run.fixed_point)
    fixed = describe_fixed_point({"fixed_point": run.fixed_point})
    with console.progress(f"encode: DDIM inversion ({run.steps} steps, {run.sampler.value}{fixed})",
                          n * passes) as advance:
        advance((n - sum(len(rows) for rows in todo)) * passes)
        for rows in todo:
            idx = frames.indices[rows]
            z_face = latents.z_face[latents.rows(torch.from_numpy(idx))].to(run.device)
            x_T = ddim.ddim_encode(run.weights.model, _model_crops(job, frames, rows, run), z_face, run.steps,
                                   run.precision, callback=lambda k, b=len(rows): advance(k * b),
                                   sampler=run.sampler.value, fixed_point=run.fixed_point)
            job.write_latent_chunk("xT", {"index": torch.from_numpy(idx), "x_T": x_T.half()})
