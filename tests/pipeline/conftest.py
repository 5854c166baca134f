"""Fixtures of the pipeline tests: a small weight set made here (random weights, random
attribute heads) and the example clip aligned and encoded with it. The aligned and
encoded clips are made once per session (``*_master``) and copied for each test that
changes them (``aligned``, ``encoded``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from s3edit.model.attributes import CELEBA_ATTRIBUTES, Classifier
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.weights.weightset import save_weight_set


@dataclass(frozen=True)
class TinySetup:
    """How the example clip is prepared for the unit tests."""

    crop_size: int = 64  # align --size 64: the tiny model (32 px) reads resized crops
    steps: int = 5  # DDIM steps of encode and edit
    frames: int = 16  # the first 16 frames are aligned (the identity net dominates the cost)


TINY = TinySetup()


def make_weight_set(folder: Path, seed: int = 0) -> Path:
    """The tiny-32-dlib preset (dlib identity, landmarks from align), random weights (the
    zero-initialised layers too, so eps depends on x_t, t and z_face) and a random
    classifier over the 40 CelebA names."""
    torch.manual_seed(seed)
    config = preset("tiny-32-dlib")
    model = build_dva(config).eval()
    for p in model.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    D = config.id_dim
    g = torch.Generator().manual_seed(seed)
    classifier = Classifier(torch.randn(40, D, generator=g), torch.randn(40, generator=g),
                            torch.randn(1, D, generator=g) * 0.01, torch.full((1, D), 0.04),
                            list(CELEBA_ATTRIBUTES))
    return save_weight_set(folder, model, classifier=classifier,
                           meta={"name": f"tiny-test-{seed}", "licence": "test only"})


@pytest.fixture(scope="session")
def tiny() -> TinySetup:
    """Crop size, DDIM steps and frame count of the fixtures below."""
    return TINY


@pytest.fixture(name="make_weight_set", scope="session")
def make_weight_set_fixture() -> Callable[..., Path]:
    """``make_weight_set(folder, seed=0)``: another small weight set (``small_weights`` is seed 0)."""
    return make_weight_set


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory) -> Path:
    return make_weight_set(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture(scope="session")
def aligned_master(tmp_path_factory, example_clip) -> Path:
    from s3edit.pipeline.align import align_video

    job = align_video(example_clip, tmp_path_factory.mktemp("jobs") / "astronaut.s3job", size=TINY.crop_size,
                      max_frames=TINY.frames)
    return job.root


@pytest.fixture
def aligned(aligned_master, tmp_path) -> Path:
    """A fresh copy of the aligned example clip (first 16 frames, 64 px) for one test."""
    return Path(shutil.copytree(aligned_master, tmp_path / "astronaut.s3job"))


@pytest.fixture(scope="session")
def encoded_master(aligned_master, small_weights, tmp_path_factory) -> Path:
    from s3edit.pipeline import encode as enc
    from s3edit.pipeline.options import run_options

    root = Path(shutil.copytree(aligned_master, tmp_path_factory.mktemp("enc") / "astronaut.s3job"))
    # fp32 on every CPU: tests compare the stored x_T with ddim_encode's in fp32
    enc.encode_job(root, run_options(small_weights, steps=TINY.steps, batch_size=6, device="cpu", precision="fp32"))
    return root


@pytest.fixture
def encoded(encoded_master, tmp_path) -> Path:
    """A fresh copy of the encoded example clip for one test."""
    return Path(shutil.copytree(encoded_master, tmp_path / "astronaut.s3job"))
