"""The training loop with DVA's objective: a few steps on a tiny model, resume after an
interruption to the same weights, the EMA ramp, global-batch sharding, and the loss
terms' shapes."""

from __future__ import annotations

import pytest
import torch

from s3edit.errors import InputError
from s3edit.face.dlib_resnet import mean_face
from s3edit.model.config import preset
from s3edit.model.data import CropData
from s3edit.model.dva import build_dva
from s3edit.model.train import (
    DVAObjective,
    TrainConfig,
    check_batch,
    ema_decay_at,
    evaluate,
    freeze_encoders,
    precompute_semantics,
    shard,
    train_dva,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    config = preset("tiny-32-dlib")
    return build_dva(config)


def crops(n: int = 6) -> CropData:
    g = torch.Generator().manual_seed(0)
    points, idx = mean_face(68, size=32)
    template = torch.full((68, 2), 16.0)
    template[torch.as_tensor(idx)] = torch.as_tensor(points, dtype=torch.float32)
    return CropData(torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, template + 0.5 * torch.randn(n, 68, 2, generator=g))


CFG = TrainConfig(steps=6, batch_size=2, lr=1e-3, checkpoint_every=3, seed=3)


def test_train_dva_learns_and_resumes_to_the_same_weights(tmp_path):
    model = tiny_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    full = train_dva(model, crops(), CFG, tmp_path / "a")
    assert len(full.losses) == 6 and set(full.losses[0]) == {"loss", "simple", "reg"}
    assert all(torch.isfinite(torch.tensor(full.total())))
    assert not torch.equal(full.ema.encoder.linear.weight, start["encoder.linear.weight"])
    assert torch.equal(full.ema.encoder.idnet.net.fc.weight, start["encoder.idnet.net.fc.weight"])  # frozen

    def dies_at_4(step, parts):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_dva(tiny_model(), crops(), CFG, tmp_path / "b", on_step=dies_at_4)
    resumed = train_dva(tiny_model(), crops(), CFG, tmp_path / "b")
    assert len(resumed.losses) == 3  # steps 4..6, from the step-3 checkpoint
    for (name, a), b in zip(full.ema.state_dict().items(), resumed.ema.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    train_dva(tiny_model(), crops(), CFG, tmp_path)
    other = TrainConfig(**{**CFG.__dict__, "lr": 5e-4})
    assert len(train_dva(tiny_model(), crops(), other, tmp_path).losses) == 6


def test_more_steps_continue_a_finished_run_to_the_same_weights(tmp_path):
    full = train_dva(tiny_model(), crops(), CFG, tmp_path / "a")
    short = TrainConfig(**{**CFG.__dict__, "steps": 3})
    train_dva(tiny_model(), crops(), short, tmp_path / "b")
    longer = train_dva(tiny_model(), crops(), CFG, tmp_path / "b")
    assert len(longer.losses) == 3  # steps 4..6 on top of the finished 3-step run
    for (name, a), b in zip(full.ema.state_dict().items(), longer.ema.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # a checkpoint past the asked-for budget is neither taken nor replaced
    with pytest.raises(InputError, match="at step 6, past the 3 steps asked for"):
        train_dva(tiny_model(), crops(), short, tmp_path / "a")


def test_evaluate_is_deterministic_and_matches_forward():
    model = tiny_model()
    freeze_encoders(model)
    data = crops()
    sem = precompute_semantics(model, data)
    objective = DVAObjective(model)
    first = evaluate(objective, data, sem, batch_size=2, batches=1)
    assert evaluate(objective, data, sem, batch_size=2, batches=1) == first
    assert first["loss"] == pytest.approx(first["simple"] + first["reg"], rel=1e-6)


def test_ema_decay_ramps_up_to_the_configured_value():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 10**6) == 0.999


def test_shard_splits_the_global_batch_in_order():
    draws = {"index": torch.arange(6), "t": torch.arange(6) * 10}
    parts = [shard(draws, r, 3) for r in range(3)]
    assert [p["index"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(torch.cat([p["t"] for p in parts]), draws["t"])
    assert check_batch(8, 2) == 4
    with pytest.raises(InputError, match="--batch-size 5 does not split evenly over 2 processes; use a multiple of 2."):
        check_batch(5, 2)
