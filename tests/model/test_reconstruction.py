"""Issue 3's done-means: a small model trained for a short while on a CPU with DVA's
objective reconstructs a real clip through DDIM encode -> decode, and the
reconstruction improves with the number of DDIM steps.

The figures are printed (``pytest -s``) so they can be quoted."""

from __future__ import annotations

import pytest
import torch

from s3edit.model import ddim
from s3edit.model.config import preset
from s3edit.train.data import load_jobs
from s3edit.model.dva import build_dva
from s3edit.train.loop import TrainConfig
from s3edit.train.objective import precompute_semantics, train_dva
from s3edit.pipeline.align import align_video
from s3edit.pipeline.encode import clip_identity

STEPS = (5, 10, 25)
FRAMES = 8  # reconstructed per clip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frames in [-1, 1] -> PSNR in dB on the [0, 1] scale."""
    mse = ((a - b) / 2).pow(2).mean().item()
    return 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def trained_reconstruction(video, tmp_path) -> dict[int, float]:
    job = align_video(video, tmp_path / "job", size=64, max_frames=48)
    data = load_jobs([job], 32)
    torch.manual_seed(0)
    config = preset("tiny-32-dlib")
    model = build_dva(config)
    cfg = TrainConfig(steps=120, batch_size=8, lr=2e-3, checkpoint_every=10_000, seed=0)
    ema = train_dva(model, data, cfg, tmp_path / "ckpt").ema
    sem = precompute_semantics(ema, data)
    z_face = ema.fuse(clip_identity(sem.z_id), sem.z_lnd)[:FRAMES].detach()
    x0 = data.crops[:FRAMES]
    out = {}
    for steps in STEPS:
        x_T = ddim.ddim_encode(ema, x0, z_face, steps)
        out[steps] = psnr(ddim.ddim_decode(ema, x_T, z_face, steps), x0)
    print(f"\n{video.name}: reconstruction PSNR by DDIM steps {out}")
    return out


def check(figures: dict[int, float]) -> None:
    values = [figures[s] for s in STEPS]
    assert values == sorted(values) and values[-1] > values[0] + 1.0, figures
    assert values[-1] > 25.0, figures  # a recognisable reconstruction, not noise


@pytest.mark.slow
def test_trained_small_model_reconstructs_the_example_clip(example_clip, tmp_path):
    check(trained_reconstruction(example_clip, tmp_path))


@pytest.mark.slow
@pytest.mark.shared
def test_trained_small_model_reconstructs_a_real_clip(shared_clips, tmp_path):
    check(trained_reconstruction(shared_clips / "talk_man_short_2s.mp4", tmp_path))
