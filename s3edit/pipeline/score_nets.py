"""What ``score`` needs from a weight set: its identity encoder as an identity net
(``--id-net arcface``: ArcFace for DVA) and its attribute heads for TACR/NAPR
(docs/metrics.md), cut from full frames the way the encoder sees faces; and which edit a
job recorded, so ``score`` of an edit made by ``s3edit`` knows its attribute.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from s3edit.errors import InputError
from s3edit.face import align as fa
from s3edit.face.identity import IdentityNet
from s3edit.job import Job
from s3edit.model.frames import landmarks_unit
from s3edit.pipeline.edit import parse_attributes, resolve_attributes
from s3edit.pipeline.options import pick_device
from s3edit.pipeline.score import AttributeTarget
from s3edit.weights.load import LoadedWeights, load_weights


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
        record = job.edit_record(name) if name else None
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
    dev = pick_device(device)
    faces = WeightSetFaces(load_weights(weights, dev), dev)
    attr = None
    if target is not None:
        name, s = resolve_attributes([target], faces.lw.ws.classifier, str(faces.lw.folder))[0]
        attr = AttributeTarget(faces, name, 1 if s >= 0 else -1)
    return (faces if wants_id else None), attr
