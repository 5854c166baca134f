"""Loading a weight set for a run: ``--weights NAME|PATH`` (or the registry's default)
-> the set on a device, with a fingerprint of its contents that the job's stages record
(latents made with other weights are not reused)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from s3edit.model.dva import DVA
from s3edit.weights.registry import resolve_weights
from s3edit.weights.weightset import CLASSIFIER_FILE, CONFIG_FILE, MODEL_FILE, S3_FILE, WeightSet, load_weight_set


def weights_fingerprint(folder: Path) -> str:
    """Identity of a weight set's contents: sha256 over config.json and the size and
    mtime of its tensor files (hashing an imported DVA set, about 1 GB in float32, on
    every run would cost seconds; any rewrite of the files changes their mtime)."""
    h = hashlib.sha256((folder / CONFIG_FILE).read_bytes())
    for name in (MODEL_FILE, CLASSIFIER_FILE, S3_FILE):
        path = folder / name
        if path.is_file():
            st = path.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass
class LoadedWeights:
    """A weight set loaded for a run: where it came from and what it holds."""

    folder: Path
    fingerprint: str
    ws: WeightSet

    @property
    def model(self) -> DVA:
        return self.ws.model

    @property
    def size(self) -> int:
        """The model's crop side, px."""
        return self.ws.config.image_size


def load_weights(weights: str | os.PathLike | None, device: torch.device) -> LoadedWeights:
    """``--weights NAME|PATH`` (None: the registry's default) -> the loaded set."""
    folder = resolve_weights(weights)
    return LoadedWeights(folder, weights_fingerprint(folder), load_weight_set(folder, device=device))
