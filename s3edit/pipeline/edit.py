"""The ``edit`` stage: move the clip identity along attribute directions and decode
every frame from its own x_T.

    run = run_options(job=job)                                    # weights, steps, device
    result = edit_job(job, [("Eyeglasses", 0.6)], run)           # edited frames

(``s3edit.pipeline.run.edit_video`` runs every stage for a video.) The edit (DVA's rule,
``s3edit.model.attributes``; docs/edit.md), routed by S3Editor when the weight set has
cluster transforms (``s3edit.s3.routing``):

    z'_id_rep = l2norm(denorm(norm(z_id_rep) + √D · Σ_a s_a · â_a))
    z'_face_i = fuse(z'_id_rep, z_lnd_i) [+ T_k(cat(z'_id_rep, z_lnd_i)) with S3 routing]
    frame_i   = DDIM decode of x_T_i under z'_face_i

With one attribute this is DVA's rule exactly; several attributes add their steps in
the normalised space before the one l2norm (the order of ``--attr`` does not matter).

Where the edit may draw (``region``): an attribute with a known region
(``s3edit.face.mask.ATTRIBUTE_REGIONS``; Eyeglasses: the eyes, temples included,
less the eyes themselves that a clear lens shows; Smiling: the mouth, cheeks and chin) is
confined to it by default (``auto``): the frame is decoded under the edited code inside
the region, with the original crop noised along its own inversion path outside it,
blended at every DDIM step from t < ``CONFINED_EDIT_START``
(``ddim.ddim_decode_in_region``), so the edit is drawn in the context of the real face.
What the edit changed against the original crop is stored as the edit
(``JOB/edits/<name>/change.*.safetensors``, float16) and ``paste`` adds it to the
original frame: outside the region the frame stays the original, pixel for pixel. The
steps above ``CONFINED_EDIT_START`` cost nothing, so a confined edit takes 0.7 times the
passes of a whole-face one. ``whole`` lets the edit change
the whole crop (DVA's way; always so for attributes without a region, e.g. Male,
Young); on the small default model such an edit also shifts the colours of some faces
(``weights/default/MODEL_CARD.md``).

A negative scale removes the attribute. When every scale is 0 the edit is no edit: the
frames are decoded under the encode stage's own z_face, bit for bit the plain
reconstruction (and no cluster transform is applied). With S3Editor transforms in the
weight set, the edit routes to the cluster of its strongest attribute.

An edit of the whole face stores its decoded crops (``JOB/edits/<name>/crops/``, at
the align crop size); ``edit.json`` beside them records what made them; ``<name>`` is
derived from the edit (``Eyeglasses+0.6__s100``; ``__whole`` appended when ``whole``
lifts a region). Frames already written are skipped, so an interrupted run resumes
where it stopped; a finished edit with the same record is not redone.
"""

from __future__ import annotations

import difflib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit import console
from s3edit.errors import InputError, WeightsError
from s3edit.face.mask import ATTRIBUTE_REGIONS, describe_edit_region, edit_region
from s3edit.job import AlignedFrames, Job
from s3edit.model import ddim
from s3edit.model.attributes import DVA_EDIT_SCALE, Classifier, edited_identity
from s3edit.model.frames import rescale_landmarks, to_model, to_uint8
from s3edit.pipeline import encode as enc
from s3edit.pipeline.options import Region, RunOptions, choice
from s3edit.pipeline.shard import joined
from s3edit.s3 import routing
from s3edit.weights.load import LoadedWeights

DEFAULT_SCALE = DVA_EDIT_SCALE  # 0.3, DVA's default s
RECON_NAME = "recon"  # the name of an edit with no attribute (or all scales 0)
# A confined edit decodes from the steps with t < 700 (DiffEdit's encoding ratio 0.7);
# above them the sample is the original crop on its inversion path, which costs no
# passes (docs/edit.md).
CONFINED_EDIT_START = 700


# --- what to edit ------------------------------------------------------------------------


def parse_attributes(specs: list[str], scale: float | None = None) -> list[tuple[str, float]]:
    """``["Eyeglasses=0.6", "Smiling"]`` -> [("Eyeglasses", 0.6), ("Smiling", scale)];
    a name without ``=S`` takes ``scale`` (default DVA's 0.3)."""
    default = DEFAULT_SCALE if scale is None else float(scale)
    out: list[tuple[str, float]] = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not name:
            raise InputError(f"--attr {spec!r} has no attribute name; write NAME or NAME=SCALE, e.g. Eyeglasses=0.3.")
        try:
            s = float(value) if sep else default
        except ValueError:
            raise InputError(f"--attr {spec!r}: the scale after '=' must be a number, e.g. {name}=0.3.") from None
        if not math.isfinite(s):
            raise InputError(f"--attr {spec!r}: the scale must be a finite number.")
        if any(n.lower() == name.lower() for n, _ in out):
            raise InputError(f"attribute {name!r} is given twice; give each attribute once.")
        out.append((name, s))
    return out


def resolve_attributes(attributes: list[tuple[str, float]], classifier: Classifier | None,
                       weights: str) -> list[tuple[str, float]]:
    """Names checked against the weight set's attribute heads and spelled as they are
    there; an unknown name raises one sentence listing the closest names."""
    if not attributes:
        return []
    if classifier is None:
        raise WeightsError(f"weight set {weights!r} has no attribute classifier, so it cannot edit "
                           "attributes; import DVA with `s3edit weights import ... --classifier CLS.ckpt`.")
    resolved = []
    for name, s in attributes:
        if name not in classifier.names:
            lower = {n.lower(): n for n in classifier.names}
            if name.lower() not in lower:
                close = difflib.get_close_matches(name, classifier.names, n=3, cutoff=0.4)
                hint = f"closest: {', '.join(close)}" if close else "see `s3edit weights list` for the names"
                raise InputError(f"unknown attribute {name!r} ({hint}).")
            name = lower[name.lower()]
        resolved.append((name, s))
    return resolved


def edit_name(attributes: list[tuple[str, float]], steps: int, region: str = "auto") -> str:
    """``Eyeglasses+0.6_Smiling+0.3__s100`` (names sorted: the rule is a sum);
    ``recon__s100`` with no attribute; ``__whole`` appended when ``region`` is
    ``whole`` for an edit that ``auto`` would confine."""
    parts = [f"{n}{s:+g}" for n, s in sorted(attributes)]
    whole = "__whole" if region == "whole" and confinable(attributes) else ""
    return f"{'_'.join(parts) or RECON_NAME}__s{steps}{whole}"


def is_no_edit(attributes: list[tuple[str, float]]) -> bool:
    return all(s == 0 for _, s in attributes)


def edited_names(attributes: list[tuple[str, float]]) -> list[str]:
    return [n for n, s in attributes if s != 0]


def confinable(attributes: list[tuple[str, float]]) -> bool:
    """True when every attribute the edit moves has a known region (``region="auto"``
    then confines the edit to their union)."""
    names = edited_names(attributes)
    return bool(names) and all(n in ATTRIBUTE_REGIONS for n in names)


# --- the edit rule ---------------------------------------------------------------------


@dataclass
class Router:
    """S3Editor's routing state of a weight set: clusters of the attributes and the
    cluster transforms T_k."""

    clusters: routing.AttributeClusters
    transforms: routing.ClusterTransforms

    def cluster(self, attributes: list[tuple[str, float]]) -> int:
        """The cluster of the strongest attribute (ties: the first given)."""
        name = max(attributes, key=lambda a: abs(a[1]))[0]
        return self.clusters.route_name(name)


def load_router(lw: LoadedWeights) -> Router | None:
    """The weight set's S3Editor routing (``s3edit.s3.selftrain.load_s3``), or None for
    a plain DVA set (``"s3": null``)."""
    from s3edit.s3.selftrain import load_s3

    state = load_s3(lw.ws)
    return None if state is None else Router(state.clusters, state.transforms)


def face_codes(model, z_id_new: torch.Tensor, z_lnd: torch.Tensor, router: Router | None,
               cluster: int | None) -> torch.Tensor:
    """z'_face (B, F) = fuse(z'_id_rep, z_lnd) [+ T_k]; z_id_new (D,), z_lnd (B, 102)."""
    z_id = z_id_new.expand(z_lnd.shape[0], -1)
    if router is None or cluster is None:
        return model.fuse(z_id, z_lnd)
    return routing.face_code(model.fuse, router.transforms, z_id, z_lnd, cluster)


# --- the stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """What to edit, checked against the weight set once: attribute names as the heads
    spell them, and where the edit may draw."""

    attributes: tuple[tuple[str, float], ...]
    region: Region = Region.auto

    @property
    def confined(self) -> bool:
        return self.region is Region.auto and confinable(list(self.attributes))

    def name(self, steps: int) -> str:
        return edit_name(list(self.attributes), steps, self.region.value)


def resolve_edit(attributes: list[tuple[str, float]] | Edit, run: RunOptions,
                 region: str | Region = Region.auto) -> Edit:
    """``attributes`` checked against ``run``'s attribute heads (one InputError naming
    the closest names for an unknown one) and ``region`` checked."""
    if isinstance(attributes, Edit):
        return attributes
    region = choice(Region, region, "region")
    lw = run.weights
    return Edit(tuple(resolve_attributes(list(attributes), lw.ws.classifier, str(lw.folder))), region)


@dataclass
class EditResult:
    job: Job
    name: str
    folder: Path  # JOB/edits/<name>
    frames: int  # frames in the edit
    decoded: int  # frames decoded by this run (0 when it was already done)
    seconds: float
    video: Path | None = None  # the pasted video, when one was written


def edit_job(job: Job | str | os.PathLike, attributes: list[tuple[str, float]] | Edit, run: RunOptions,
             region: str | Region = Region.auto, latents: enc.Latents | None = None) -> EditResult:
    """Edit every encoded frame of ``job`` (module docstring) with ``run``'s weights,
    steps and sampler; runs ``encode`` first when the job is not encoded with them (a
    job encoded with another sampler gets new x_T). ``latents``: the encode stage's
    results when the caller has them (made with ``run``)."""
    job = job if isinstance(job, Job) else Job.open(job)
    shard = joined()
    edit = resolve_edit(attributes, run, region)  # before any work
    latents = latents or enc.encode_job(job, run)
    name = edit.name(run.steps)
    folder = job.edit_dir(name)
    lw = run.weights
    record = {"attributes": [{"name": n, "scale": s} for n, s in edit.attributes], "steps": run.steps,
              "sampler": run.sampler.value,
              "region": {"edit_start": CONFINED_EDIT_START, "outside": "straight_path",
                         **describe_edit_region(edited_names(list(edit.attributes)))} if edit.confined else "whole",
              "weights": lw.fingerprint, "weights_path": str(lw.folder.resolve()),
              "encode": job.stage(enc.STAGE)["params"]}
    old = job.edit_record(name)
    frames = job.aligned_frames()
    total = len(frames.indices)
    if old is not None and old.get("params") == record and old.get("done") and _complete(job, name, frames):
        console.note(f"edit: {name} is already done in {job.root}; nothing to do.")
        return EditResult(job, name, folder, total, 0, 0.0)
    shard.barrier()  # every process has read the record before rank 0 changes it
    if shard.first:
        if old is not None and old.get("params") != record:
            job.discard_edit_frames(name)
        job.write_edit_record(name, {"params": record, "done": False})
    shard.barrier()
    started = time.perf_counter()
    decoded = shard.total(_decode_all(job, name, edit, run, frames, latents))  # waits for every process
    seconds = time.perf_counter() - started
    if shard.first:
        job.write_edit_record(name, {"params": record, "done": True, "frames": total, "device": str(run.device),
                                     "precision": run.precision, "seconds": round(seconds, 3)})
    shard.barrier()
    return EditResult(job, name, folder, total, decoded, seconds)


def _complete(job: Job, name: str, frames: AlignedFrames) -> bool:
    done = job.edit_frames_done(name)
    return all(int(i) in done for i in frames.indices)


def region_of(attrs: list[tuple[str, float]], frames: AlignedFrames, idx: torch.Tensor,
              size: int) -> torch.Tensor:
    """The soft edit region (B, 1, size, size) of frames ``idx`` at the model's ``size``,
    from the original crops' landmarks."""
    rows = np.searchsorted(frames.indices, idx.numpy())
    lnd = torch.from_numpy(rescale_landmarks(frames.crop_landmarks[rows], frames.size, size))
    return edit_region(edited_names(attrs), lnd, size)


def at_crop_size(change: torch.Tensor, size: int) -> torch.Tensor:
    """A confined edit's change (B, 3, S, S) at the align crop ``size`` (bicubic)."""
    if change.shape[-1] == size:
        return change.float()
    return F.interpolate(change.float(), size=(size, size), mode="bicubic", align_corners=False)


def _refuse_nonfinite(idx: torch.Tensor, run: RunOptions, *decoded: torch.Tensor) -> None:
    """Stop the edit before anything is written from a batch whose decode holds NaN or
    infinity (damaged weights, or an overflow at reduced precision): a non-finite value
    would be written as an arbitrary colour."""
    if all(bool(torch.isfinite(d).all()) for d in decoded):
        return
    first, last = int(idx.min()), int(idx.max())
    frames = f"frame {first}" if first == last else f"frames {first}-{last}"
    fix = ("check the weight set with `s3edit weights verify`" if run.precision == "fp32"
           else "rerun with --precision fp32, and check the weight set with `s3edit weights verify`")
    raise WeightsError(f"decoding {frames} gave NaN or infinite values, so the edit stopped and nothing was "
                       f"written from them; {fix}.")


@torch.no_grad()
def _decode_all(job: Job, name: str, edit: Edit, run: RunOptions, frames: AlignedFrames,
                latents: enc.Latents) -> int:
    lw, dev, steps, prec = run.weights, run.device, run.steps, run.precision
    attrs = list(edit.attributes)
    model, classifier = lw.model, lw.ws.classifier
    no_edit = is_no_edit(attrs)
    router = None if no_edit else load_router(lw)
    cluster = router.cluster(attrs) if router is not None else None
    z_new = None if no_edit else edited_identity(latents.z_id_rep.to(dev), attrs, classifier)
    done = job.edit_frames_done(name)
    # this process's frames: its share of the x_T chunks (all of them in a single process)
    mine = [int(i) for chunk in joined().share(job.latent_chunk_frames("xT")) for i in chunk]
    todo = [i for i in mine if i not in done]
    total, todo_set, decoded = len(mine), set(todo), 0
    passes = ddim.region_passes(steps, CONFINED_EDIT_START) if edit.confined else steps
    with console.progress(f"edit {name}: DDIM decoding", total * passes) as advance:
        advance((total - len(todo)) * passes)
        for index, x_T in enc.iter_x_T(latents):
            keep = torch.tensor([int(i) in todo_set for i in index], dtype=torch.bool)
            if not keep.any():
                continue
            for part in torch.split(torch.nonzero(keep).flatten(), run.batch_size):
                idx = index[part]
                rows = latents.rows(idx)
                z_face = (latents.z_face[rows].to(dev) if no_edit
                          else face_codes(model, z_new, latents.z_lnd[rows].to(dev), router, cluster))
                step = lambda k, b=len(part): advance(k * b)  # noqa: E731
                if edit.confined:
                    region = region_of(attrs, frames, idx, lw.size).to(dev)
                    x0 = to_model(job.read_crops(idx.numpy()), lw.size).to(dev)
                    out = ddim.ddim_decode_in_region(model, x_T[part].to(dev), x0, z_face, region, steps, prec,
                                                     callback=step, edit_start=CONFINED_EDIT_START,
                                                     sampler=run.sampler.value)
                    _refuse_nonfinite(idx, run, out)
                    job.write_change(name, idx.numpy(), at_crop_size((out - x0).cpu(), frames.size))
                else:
                    out = ddim.ddim_decode(model, x_T[part].to(dev), z_face, steps, prec, callback=step,
                                           sampler=run.sampler.value)
                    _refuse_nonfinite(idx, run, out)
                    for i, rgb in zip(idx.tolist(), to_uint8(out, frames.size)):
                        job.write_crop(i, rgb, name)
                decoded += len(part)
    return decoded
