"""The ``edit`` stage: move the clip identity along attribute directions and decode
every frame from its own x_T.

    result = edit_job("clip.job", [("Eyeglasses", 0.6)])            # edited crops
    result = edit_video("clip.mp4", [("Eyeglasses", 0.6)], "out.mp4")  # every stage

The edit (DVA's rule, DESIGN §3, through ``s3edit.s3.routing``):

    z'_id_rep = l2norm(denorm(norm(z_id_rep) + √D · Σ_a s_a · â_a))
    z'_face_i = fuse(z'_id_rep, z_lnd_i) [+ T_k(cat(z'_id_rep, z_lnd_i)) with S3 routing]
    frame_i   = DDIM decode of x_T_i under z'_face_i

With one attribute this is DVA's rule exactly; several attributes add their steps in
the normalised space before the one l2norm (the order of ``--attr`` does not matter).

Where the edit may draw (``region``): an attribute with a known region
(``s3edit.face.mask.ATTRIBUTE_REGIONS``; Eyeglasses: the eyes, temples included) is
confined to it by default (``auto``): the frame is decoded under the edited code inside
the region and under its own code outside, blended at every DDIM step from t <
``CONFINED_EDIT_START`` (``ddim.ddim_decode_in_region``), so the edit is drawn in the
context of the real face. What the edit changed against the plain decode is then added
to the original crop: outside the region the crop stays the original, pixel for pixel,
and inside it keeps the original's detail (the reconstruction's own error is not part
of the edit). This costs 1.7 times the decode passes. ``whole`` lets the edit change
the whole crop (DVA's way; always so for attributes without a region, e.g. Smiling,
Young); on the small default model such an edit also shifts the colours of some faces
(``weights/default/MODEL_CARD.md``).

A negative scale removes the attribute. When every scale is 0 the edit is no edit: the
frames are decoded under the encode stage's own z_face, bit for bit the plain
reconstruction (and no cluster transform is applied). With S3Editor transforms in the
weight set, the edit routes to the cluster of its strongest attribute.

Edited crops go to ``JOB/edits/<name>/crops/`` at the align crop size, ``edit.json``
beside them records what made them; ``<name>`` is derived from the edit
(``Eyeglasses+0.6__s100``; ``__whole`` appended when ``whole`` lifts a region). Frames
whose crop exists are skipped, so an interrupted run resumes where it stopped; a
finished edit with the same record is not redone.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from s3edit import console
from s3edit.errors import InputError, WeightsError
from s3edit.face.mask import ATTRIBUTE_REGIONS, edit_region
from s3edit.job import Job
from s3edit.model import ddim
from s3edit.model.attributes import DVA_EDIT_SCALE, Classifier, edited_identity
from s3edit.paths import atomic_path, check_output_path, write_json_atomic
from s3edit.pipeline import encode as enc
from s3edit.s3 import routing

EDIT_FILE = "edit.json"
DEFAULT_SCALE = DVA_EDIT_SCALE  # 0.3, DVA's default s
RECON_NAME = "recon"  # the name of an edit with no attribute (or all scales 0)
REGIONS = ("auto", "whole")  # `--region`: confine edits of attributes with a region, or not
# A confined edit applies its code at the decode steps with t < 700 (DiffEdit's encoding
# ratio 0.7); the noisier steps above run once, under the frame's own code. They set a
# decode's colours, not the glasses: on 4 crops of each of two shared clips the default
# model draws the same glasses, the skin around them a little less darkened (eye band
# change 7.1 vs 7.9 % and 9.3 vs 9.5 % of the range: `benchmarks/edit_response.py JOB
# --scales 0.6 --frames 4 --identity clip --confined --edited-below 700`), for 15 % fewer
# passes.
CONFINED_EDIT_START = 700
JOB_SUFFIX = ".s3job"  # default job folder of `edit VIDEO`: ./<stem>.s3job


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


def check_region(region: str) -> str:
    if region not in REGIONS:
        raise InputError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}.")
    return region


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


def load_router(lw: enc.LoadedWeights) -> Router | None:
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


# --- crops out ------------------------------------------------------------------------------


def to_uint8(x: torch.Tensor, size: int) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, size, size, 3) uint8 RGB (INTER_AREA / CUBIC resize
    to the align crop size when S differs)."""
    img = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    if img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in img])


def write_crop(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


# --- the stage ---------------------------------------------------------------------------


@dataclass
class EditResult:
    job: Job
    name: str
    folder: Path  # JOB/edits/<name>
    frames: int  # crops in the edit
    decoded: int  # frames decoded by this run (0 when it was already done)
    seconds: float
    video: Path | None = None  # the pasted video, when one was written


def _record(job: Job, name: str) -> dict | None:
    path = job.edit_dir(name) / EDIT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def weights_for(job: Job, weights, dev: torch.device) -> enc.LoadedWeights:
    """``--weights`` if given, else the weight set the job was encoded with, else the
    registry's default."""
    entry = job.stage(enc.STAGE) or {}
    if weights is None and entry.get("done") and entry.get("weights_path"):
        if Path(entry["weights_path"]).is_dir():
            weights = Path(entry["weights_path"])
    return enc.load_weights(weights, dev)


def edit_job(
    job: Job | str | os.PathLike,
    attributes: list[tuple[str, float]],
    *,
    weights: str | os.PathLike | None = None,
    steps: int | None = None,
    batch_size: int = enc.DEFAULT_BATCH,
    device: str = "auto",
    precision: str = "auto",
    region: str = "auto",
    loaded: enc.LoadedWeights | None = None,
) -> EditResult:
    """Edit every encoded frame of ``job`` (module docstring); runs ``encode`` first
    when the job is not encoded with these weights and steps. ``steps`` defaults to
    the job's encode steps, else 100. ``region``: ``auto`` confines attributes with a
    known region to it, ``whole`` does not (module docstring)."""
    job = job if isinstance(job, Job) else Job.open(job)
    if steps is None:
        steps = int((job.stage(enc.STAGE) or {}).get("params", {}).get("steps", ddim.DEFAULT_STEPS))
    enc.check_steps(steps)
    enc.check_batch_size(batch_size)
    check_region(region)
    dev = enc.pick_device(device)
    prec = enc.pick_precision(precision, dev)
    lw = loaded or weights_for(job, weights, dev)
    attrs = resolve_attributes(attributes, lw.ws.classifier, str(lw.folder))  # before any work
    enc.encode_job(job, steps=steps, batch_size=batch_size, device=device, precision=precision, loaded=lw)
    name = edit_name(attrs, steps, region)
    folder = job.edit_dir(name)
    confine = region == "auto" and confinable(attrs)
    record = {"attributes": [{"name": n, "scale": s} for n, s in attrs], "steps": steps,
              "region": {"edit_start": CONFINED_EDIT_START} if confine else "whole",
              "weights": lw.fingerprint, "weights_path": str(lw.folder.resolve()),
              "encode": job.stage(enc.STAGE)["params"]}
    old = _record(job, name)
    if old is not None and old.get("params") != record:
        shutil.rmtree(folder / "crops", ignore_errors=True)
    frames = enc.aligned_frames(job)
    if old is not None and old.get("params") == record and old.get("done") and _complete(job, name, frames):
        console.note(f"edit: {name} is already done in {job.root}; nothing to do.")
        return EditResult(job, name, folder, len(frames.indices), 0, 0.0)
    write_json_atomic(folder / EDIT_FILE, {"params": record, "done": False})
    started = time.perf_counter()
    decoded = _decode_all(job, name, attrs, lw, frames, steps, batch_size, dev, prec, confine)
    seconds = time.perf_counter() - started
    write_json_atomic(folder / EDIT_FILE, {"params": record, "done": True, "frames": len(frames.indices),
                                           "device": str(dev), "precision": prec,
                                           "seconds": round(seconds, 3)})
    return EditResult(job, name, folder, len(frames.indices), decoded, seconds)


def _complete(job: Job, name: str, frames: enc.AlignedFrames) -> bool:
    return all(job.crop_path(int(i), name).is_file() for i in frames.indices)


def region_of(attrs: list[tuple[str, float]], frames: enc.AlignedFrames, idx: torch.Tensor,
              size: int) -> torch.Tensor:
    """The soft edit region (B, 1, size, size) of frames ``idx`` at the model's ``size``,
    from the original crops' landmarks."""
    rows = np.searchsorted(frames.indices, idx.numpy())
    lnd = (torch.from_numpy(frames.crop_landmarks[rows]) + 0.5) * (size / frames.size) - 0.5
    return edit_region(edited_names(attrs), lnd, size)


def onto_original(job: Job, idx: torch.Tensor, change: torch.Tensor, size: int) -> torch.Tensor:
    """The original crops of frames ``idx`` at the align ``size`` plus ``change`` (B, 3,
    S, S), what a confined edit changed against the plain decode (bicubic to ``size``):
    (B, 3, size, size) in [-1, 1]. Where the edit changed nothing the crop is the
    original, not its reconstruction."""
    if change.shape[-1] != size:
        change = F.interpolate(change.float(), size=(size, size), mode="bicubic", align_corners=False)
    originals = enc.read_crops([job.crop_path(int(i)) for i in idx], size)
    return originals + change.cpu()


@torch.no_grad()
def _decode_all(job, name, attrs, lw, frames, steps, batch_size, dev, prec, confine: bool) -> int:
    latents = enc.load_latents(job)
    model, classifier = lw.model, lw.ws.classifier
    no_edit = is_no_edit(attrs)
    router = None if no_edit else load_router(lw)
    cluster = router.cluster(attrs) if router is not None else None
    z_new = None if no_edit else edited_identity(latents.z_id_rep.to(dev), attrs, classifier)
    todo = [int(i) for i in frames.indices if not job.crop_path(int(i), name).is_file()]
    total, todo_set, decoded = len(frames.indices), set(todo), 0
    with console.progress(f"edit {name}: DDIM decoding", total * steps) as advance:
        advance((total - len(todo)) * steps)
        for index, x_T in enc.iter_x_T(latents):
            keep = torch.tensor([int(i) in todo_set for i in index], dtype=torch.bool)
            if not keep.any():
                continue
            for part in torch.split(torch.nonzero(keep).flatten(), batch_size):
                idx = index[part]
                rows = latents.rows(idx)
                z_face = (latents.z_face[rows].to(dev) if no_edit
                          else face_codes(model, z_new, latents.z_lnd[rows].to(dev), router, cluster))
                step = lambda k, b=len(part): advance(k * b)  # noqa: E731
                if confine:
                    region = region_of(attrs, frames, idx, lw.size).to(dev)
                    out, plain = ddim.ddim_decode_in_region(model, x_T[part].to(dev), z_face,
                                                            latents.z_face[rows].to(dev), region, steps, prec,
                                                            callback=step, edit_start=CONFINED_EDIT_START)
                    out = onto_original(job, idx, out - plain, frames.size)
                else:
                    out = ddim.ddim_decode(model, x_T[part].to(dev), z_face, steps, prec, callback=step)
                for i, rgb in zip(idx.tolist(), to_uint8(out, frames.size)):
                    write_crop(job.crop_path(i, name), rgb)
                decoded += len(part)
    return decoded


def default_job_dir(video: Path) -> Path:
    return Path.cwd() / f"{video.stem}{JOB_SUFFIX}"


def default_output(video: Path, name: str) -> Path:
    return Path.cwd() / f"{video.stem}_{name}.mp4"


def edit_video(
    video: str | os.PathLike,
    attributes: list[tuple[str, float]],
    output: str | os.PathLike | None = None,
    *,
    job_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    steps: int | None = None,
    batch_size: int = enc.DEFAULT_BATCH,
    device: str = "auto",
    precision: str = "auto",
    overwrite: bool = False,
    size: int | None = None,
    region: str = "auto",
) -> EditResult:
    """Every missing stage for ``video``: align (crops of ``size``, default the model's
    resolution) -> encode -> edit ->
    paste, into ``job_dir`` (default ``./<stem>.s3job``); writes the edited video to
    ``output`` (default ``./<stem>_<edit name>.mp4``). Stages already done are skipped."""
    from s3edit.paths import require_input_file
    from s3edit.pipeline.align import align_video

    video = require_input_file(video, "video")
    check_region(region)
    job_dir = Path(job_dir) if job_dir is not None else default_job_dir(video)
    if output is not None:  # before any work: a clash should not cost an encode
        check_output_path(output, [video], overwrite)
    dev = enc.pick_device(device)
    lw = weights_for(Job.open(job_dir), weights, dev) if Job.is_job(job_dir) else enc.load_weights(weights, dev)
    resolve_attributes(attributes, lw.ws.classifier, str(lw.folder))  # fail before align
    if Job.is_job(job_dir) and Job.open(job_dir).is_done("align"):
        from s3edit.video.io import probe, source_info

        job = Job.create(job_dir, source_info(probe(video)))  # checks it is this video's job
        console.note(f"align: reusing the aligned crops in {job.root}.")
    else:
        job = align_video(video, job_dir, size=size or lw.size)
    result = edit_job(job, attributes, steps=steps, batch_size=batch_size,
                      device=device, precision=precision, region=region, loaded=lw)
    result.video = paste_edit(result, output if output is not None else default_output(video, result.name),
                              overwrite)
    return result


def paste_edit(result: EditResult, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Paste an edit's crops into the job's source video -> ``output``."""
    from s3edit.pipeline.paste import PasteConfig, paste_video

    return paste_video(result.job, output, PasteConfig(edit=result.name, overwrite=overwrite)).output


# --- for score: TACR/NAPR with the weight set's heads, its identity encoder as ID net -------

ARCFACE_ID_NET = "arcface"  # `score --id-net arcface`: the weight set's identity encoder


def recorded_edit(edited: str | os.PathLike, original: str | os.PathLike | None = None
                  ) -> tuple[str, float, Path] | None:
    """The edit behind EDITED, when a job says so: EDITED is a job whose paste stage
    wrote an edit, or ORIGINAL is a job whose paste stage wrote EDITED. Returns (its
    strongest attribute, that scale, the weight-set folder it used), else None."""
    for path in (edited, original):
        if path is None or not (Path(path).is_dir() and Job.is_job(path)):
            continue
        job = Job.open(path)
        paste = job.stage("paste") or {}
        if path == original and Path(paste.get("output") or "").resolve() != Path(edited).resolve():
            continue
        name = (paste.get("params") or {}).get("edit")
        record = _record(job, name) if name else None
        attrs = (record or {}).get("params", {}).get("attributes") or []
        if attrs:
            best = max(attrs, key=lambda a: abs(a["scale"]))
            return best["name"], float(best["scale"]), Path(record["params"]["weights_path"])
    return None


def score_nets(edited: str | os.PathLike, original: str | os.PathLike | None = None, *,
               weights: str | os.PathLike | None = None, attribute: str | None = None,
               id_net: str | None = None, device: str = "auto"):
    """What ``score`` needs from a weight set -> (identity net or None, AttributeTarget
    or None).

    - ``id_net == "arcface"``: the weight set's identity encoder (``WeightSetFaces``);
    - TACR/NAPR whenever attribute heads are loaded: for ``attribute`` (``NAME[=S]``;
      the sign of S is the edit's direction), or else for the strongest attribute of
      the edit a job recorded (``recorded_edit``). Weights: ``weights``, else the ones
      that edit used, else the registry's default."""
    from s3edit.pipeline.score import AttributeTarget

    recorded = recorded_edit(edited, original)
    if weights is None and recorded is not None:
        weights = recorded[2]
    if attribute is None and recorded is not None:
        target: tuple[str, float] | None = recorded[:2]
    elif attribute is not None:
        target = parse_attributes([attribute], 1.0)[0]
    else:
        target = None
    wants_id = id_net == ARCFACE_ID_NET
    if not wants_id and target is None:
        return None, None
    dev = enc.pick_device(device)
    faces = enc.WeightSetFaces(enc.load_weights(weights, dev), dev)
    attr = None
    if target is not None:
        name, s = resolve_attributes([target], faces.lw.ws.classifier, str(faces.lw.folder))[0]
        attr = AttributeTarget(faces, name, 1 if s >= 0 else -1)
    return (faces if wants_id else None), attr
