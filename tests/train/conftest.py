"""Shared pieces of the training tests: a tiny DVA and a handful of random crops with
mean-face landmarks, as factories (each call builds a fresh one)."""

from __future__ import annotations

import pytest
import torch

from s3edit.face.dlib_resnet import mean_face
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.train.data import CropData


@pytest.fixture
def tiny_model():
    """``tiny_model(seed=0)``: a tiny-32 DVA with the dlib identity net."""

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return build_dva(preset("tiny-32-dlib"))

    return make


@pytest.fixture
def crops():
    """``crops(n=6)``: n random 32-px crops, landmarks jittered around the mean face."""

    def make(n: int = 6) -> CropData:
        g = torch.Generator().manual_seed(0)
        points, idx = mean_face(68, size=32)
        template = torch.full((68, 2), 16.0)
        template[torch.as_tensor(idx)] = torch.as_tensor(points, dtype=torch.float32)
        return CropData(torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
                        template + 0.5 * torch.randn(n, 68, 2, generator=g))

    return make
