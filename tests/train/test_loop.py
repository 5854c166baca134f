"""The training loop (``s3edit.train.loop``): a few steps on a tiny model, resume after an
interruption to the same weights, bf16 mixed precision against fp32, the EMA ramp,
global-batch sharding, fixed-draw evaluation, and the optimizer hooks on an objective
that is not DVA's."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from s3edit.errors import InputError
from s3edit.s3.dhspg import DHSPG, DHSPGConfig, Group
from s3edit.train.loop import (
    Objective,
    OptimizerHooks,
    TrainConfig,
    check_batch,
    ema_decay_at,
    check_precision,
    evaluate,
    shard,
    train,
)
from s3edit.train.objective import DVAObjective, freeze_encoders, precompute_semantics, train_dva

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = TrainConfig(steps=6, batch_size=2, lr=1e-3, checkpoint_every=3, seed=3)


def dies_at_4(step, parts):
    """An ``on_step`` that interrupts a run after its 4th step (the checkpoint is at 3)."""
    if step == 4:
        raise KeyboardInterrupt


def test_train_dva_learns_and_resumes_to_the_same_weights(tmp_path, tiny_model, crops):
    model = tiny_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    full = train_dva(model, crops(), CFG, tmp_path / "a")
    assert len(full.losses) == 6 and set(full.losses[0]) == {"loss", "simple", "reg"}
    assert all(torch.isfinite(torch.tensor(full.total())))
    assert not torch.equal(full.ema.encoder.linear.weight, start["encoder.linear.weight"])
    assert torch.equal(full.ema.encoder.idnet.net.fc.weight, start["encoder.idnet.net.fc.weight"])  # frozen

    with pytest.raises(KeyboardInterrupt):
        train_dva(tiny_model(), crops(), CFG, tmp_path / "b", on_step=dies_at_4)
    resumed = train_dva(tiny_model(), crops(), CFG, tmp_path / "b")
    assert len(resumed.losses) == 3  # steps 4..6, from the step-3 checkpoint
    for (name, a), b in zip(full.ema.state_dict().items(), resumed.ema.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, tiny_model, crops):
    train_dva(tiny_model(), crops(), CFG, tmp_path)
    other = TrainConfig(**{**CFG.__dict__, "lr": 5e-4})
    assert len(train_dva(tiny_model(), crops(), other, tmp_path).losses) == 6


def test_a_checkpoint_of_other_starting_weights_is_not_resumed(tmp_path, tiny_model, crops):
    """The same command over other starting weights (a ``--from`` set retrained since)
    is another run: it starts at step 0, not from the first run's checkpoint."""
    train_dva(tiny_model(seed=0), crops(), CFG, tmp_path)
    with pytest.raises(InputError, match="holds the checkpoint of another run"):
        train_dva(tiny_model(seed=1), crops(), CFG, tmp_path, keep_other=True)
    assert len(train_dva(tiny_model(seed=1), crops(), CFG, tmp_path).losses) == 6


def test_a_checkpoint_without_a_start_fingerprint_still_resumes(tmp_path, tiny_model, crops):
    with pytest.raises(KeyboardInterrupt):
        train_dva(tiny_model(), crops(), CFG, tmp_path, on_step=dies_at_4)
    info = json.loads((tmp_path / "train.json").read_text())
    assert len(info.pop("start")) == 64  # the starting weights' sha256
    (tmp_path / "train.json").write_text(json.dumps(info))  # as checkpoints were written before
    assert len(train_dva(tiny_model(), crops(), CFG, tmp_path).losses) == 3


def test_more_steps_continue_a_finished_run_to_the_same_weights(tmp_path, tiny_model, crops):
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


def test_bf16_training_follows_fp32_over_fp32_weights(tmp_path, tiny_model, crops):
    """The same run in bf16 autocast: other rounding (its losses differ from fp32's) but
    the same training (losses within 0.1 %, weights moved alike: the two runs' EMA weights
    differ by under a tenth of what fp32 training moved them), every tensor kept fp32."""
    start = tiny_model().state_dict()
    fp32 = train_dva(tiny_model(), crops(), CFG, tmp_path / "fp32")
    bf16 = train_dva(tiny_model(), crops(), TrainConfig(**{**CFG.__dict__, "precision": "bf16"}), tmp_path / "bf16")
    assert fp32.total() != bf16.total()
    assert torch.allclose(torch.tensor(bf16.total()), torch.tensor(fp32.total()), rtol=1e-3)
    a, b = fp32.ema.state_dict(), bf16.ema.state_dict()
    moved = sum(float((a[k] - start[k]).abs().sum()) for k in a if a[k].is_floating_point())
    apart = sum(float((a[k] - b[k]).abs().sum()) for k in a if a[k].is_floating_point())
    assert moved > 0 and apart < 0.1 * moved, (apart, moved)
    assert {t.dtype for t in b.values() if t.is_floating_point()} == {torch.float32}


def test_a_checkpoint_resumes_under_the_other_precision(tmp_path, tiny_model, crops):
    with pytest.raises(KeyboardInterrupt):
        train_dva(tiny_model(), crops(), CFG, tmp_path, on_step=dies_at_4)
    resumed = train_dva(tiny_model(), crops(), TrainConfig(**{**CFG.__dict__, "precision": "bf16"}), tmp_path)
    assert len(resumed.losses) == 3  # steps 4..6 in bf16, from the fp32 run's step-3 checkpoint


def test_fp16_training_is_refused(tmp_path, tiny_model, crops):
    check_precision("bf16")
    with pytest.raises(InputError, match="training runs in fp32 or bf16, not fp16"):
        train_dva(tiny_model(), crops(), TrainConfig(**{**CFG.__dict__, "precision": "fp16"}), tmp_path)
    assert not any(tmp_path.iterdir())  # refused before the first step


def test_evaluate_is_deterministic_and_matches_forward(tiny_model, crops):
    model = tiny_model()
    freeze_encoders(model)
    data = crops()
    frames = precompute_semantics(model, data).per_frame(data)
    objective = DVAObjective(model)
    first = evaluate(objective, frames, batch_size=2, batches=1)
    assert evaluate(objective, frames, batch_size=2, batches=1) == first
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


def test_shard_splits_tensors_of_other_row_counts_too():
    draws = {"index": torch.arange(4), "pair_src": torch.arange(2) + 10}
    mine = shard(draws, 1, 2)
    assert mine["index"].tolist() == [2, 3] and mine["pair_src"].tolist() == [11]


# --- any objective, any optimizer -------------------------------------------------------------


class Regression(Objective):
    """Least squares of a Linear on the frames' mean colour: an objective the loop knows
    nothing more about than ``Objective`` says."""

    name = "regression"

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(3, 1)

    def draw(self, gen, batch, num_frames, shape):
        return {"index": torch.randint(num_frames, (batch,), generator=gen)}

    def forward(self, batch):
        x = batch["x0"].mean(dim=(2, 3))
        return {"loss": (self.model(x).squeeze(1) - batch["y"]).pow(2).mean()}


class Recording(torch.optim.SGD):
    """SGD that records what the loop's hooks told it."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.seen: list[float] = []
        self.finished = 0

    def before_step(self, loss: float) -> None:
        self.seen.append(loss)

    def after_training(self) -> None:
        self.finished += 1


def frames_of(crops):
    data = crops(8)
    return {"x0": data.crops, "y": data.crops.mean(dim=(1, 2, 3))}


def test_the_loop_calls_an_optimizers_hooks_and_needs_none(tmp_path, crops):
    cfg = TrainConfig(steps=4, batch_size=2, lr=0.1, checkpoint_every=10, seed=0)
    torch.manual_seed(0)
    objective = Regression()
    hooked = Recording(objective.parameters(), lr=0.1)
    assert isinstance(hooked, OptimizerHooks)
    result = train(objective, frames_of(crops), cfg, tmp_path / "a", hooked)
    assert hooked.seen == result.total() and hooked.finished == 1
    # a plain torch optimizer has no hooks and trains the same weights
    torch.manual_seed(0)
    plain_objective = Regression()
    plain = torch.optim.SGD(plain_objective.parameters(), lr=0.1)
    assert not isinstance(plain, OptimizerHooks)
    again = train(plain_objective, frames_of(crops), cfg, tmp_path / "b", plain)
    assert again.total() == result.total()
    assert torch.equal(plain_objective.model.weight, objective.model.weight)


def test_dhspg_follows_the_hooks():
    weight = nn.Parameter(torch.randn(2, 4))
    assert isinstance(DHSPG([weight], [Group(weight, (0, 1))], DHSPGConfig(q=0.5)), OptimizerHooks)
