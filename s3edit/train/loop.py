"""The training loop: one objective, one optimizer, an EMA of the network, resumable
checkpoints, data parallel over processes (docs/training.md).

An objective (``Objective``) is an ``nn.Module``: ``draw`` makes the random numbers of
one global batch, ``forward(batch)`` returns its loss terms (each a mean over the
samples) with the total under ``"loss"``, and ``model`` is the network whose EMA the
loop keeps. DVA's objective is ``s3edit.train.objective.DVAObjective``; S3Editor's is
``s3edit.s3.selftrain.S3Objective``. An optimizer may also follow ``OptimizerHooks``
(S3Editor's ``s3edit.s3.dhspg.DHSPG`` does); plain torch optimizers need nothing more.

Scale-out is Hugging Face Accelerate's (DDP; gloo on CPU, NCCL on GPUs): the same code
runs on one CPU, one GPU or under ``accelerate launch`` / ``torchrun``. Each step draws
the whole global batch (``cfg.batch_size`` rows) from a generator seeded by (seed,
step), identically on every process; process r takes rows [r·b, (r+1)·b), b = rows /
processes, and DDP averages the gradients. Every term being a per-sample mean over
equal shards, N processes make the update of one process with the same global batch
(up to float summation order; exactly for networks without dropout, whose masks are
drawn per process), and a run resumed from its checkpoint reaches the weights of an
uninterrupted one.

Mixed precision (``cfg.precision = "bf16"``): the objective's forward runs under bf16
autocast with the network channels_last, over fp32 weights, gradients, optimizer state
and EMA; the objectives cast the network's output to fp32 before their losses. bf16
keeps fp32's exponent range, so no loss scaling is needed (fp16 would need it and is
not offered). A checkpoint resumes under either precision: the precision chooses how
fast the steps run, not what they train.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from s3edit.errors import InputError
from s3edit.model import ddim
from s3edit.paths import atomic_path, write_json_atomic

STATE_FILE = "state.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
INFO_FILE = "train.json"
SEED_STRIDE = 1_000_003  # step generators are seeded by seed * SEED_STRIDE + step
TRAIN_PRECISIONS = ("fp32", "bf16")
RUN_KEYS = ("steps", "precision")  # TrainConfig fields a resumed run may change
EMA_WARMUP = 10  # decay_t = min(decay, (1 + t) / (EMA_WARMUP + t)): TF's num_updates rule


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16  # the global batch: split over the processes
    lr: float = 1e-4
    ema_decay: float = 0.999  # the EMA's final decay (it ramps up: ``ema_decay_at``)
    grad_clip: float = 1.0
    face_weight: float = 1.0  # weight of DVA's face term L_reg, read by the objectives (DVA uses 1)
    checkpoint_every: int = 200
    seed: int = 0
    precision: str = "fp32"  # the forward pass's: fp32, or bf16 autocast (module docstring)


@dataclass
class TrainResult:
    steps: int
    losses: list[dict[str, float]]  # every loss term per step of this run (all processes' mean)
    ema: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)  # objective-specific facts

    def total(self) -> list[float]:
        return [parts["loss"] for parts in self.losses]


class Objective(nn.Module):
    """What the loop trains (what DDP wraps). Subclasses set ``name`` and ``model`` and
    define ``draw`` and ``forward``; ``index_keys``, ``split_rows`` and ``describe`` have
    defaults for an objective that draws one frame per row."""

    name = "objective"
    model: nn.Module  # the network whose EMA the loop keeps and returns

    @property
    def index_keys(self) -> dict[str, str]:
        """Draws that index frames -> the prefix their frames' tensors get in a batch."""
        return {"index": ""}

    def draw(self, gen: torch.Generator, batch: int, num_frames: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """The random numbers of one global batch of ``batch`` rows (CPU), from ``gen``
        only; frames are indices below ``num_frames``, of shape ``shape``."""
        raise NotImplementedError

    def split_rows(self, batch_size: int) -> list[int]:
        """The row counts of one global batch's draws, each split over the processes."""
        return [batch_size]

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        return {"objective": self.name}


@runtime_checkable
class OptimizerHooks(Protocol):
    """Optional methods of an optimizer that the loop calls: ``before_step(loss)`` with
    the loss of the current iterate (all processes' mean, on the batch whose gradients
    the coming ``step`` applies), ``after_training()`` once the last step is taken."""

    def before_step(self, loss: float) -> None: ...

    def after_training(self) -> None: ...


# --- pieces ---------------------------------------------------------------------------------


def gather_batch(objective: Objective, draws: dict[str, Tensor], frames: dict[str, Tensor],
                 device) -> dict[str, Tensor]:
    """One process's batch: its draws, plus the tensors of ``frames`` (per frame, by name)
    of the frames each index draw names (``objective.index_keys``: draw -> prefix)."""
    batch = {k: v.to(device) for k, v in draws.items()}
    for key, prefix in objective.index_keys.items():
        batch |= {prefix + k: v[draws[key]].to(device) for k, v in frames.items()}
    return batch


def ema_decay_at(decay: float, step: int) -> float:
    """The EMA decay after ``step`` updates: ramps up from 0.1, so a short tune (a few
    hundred steps) is not left at its starting weights by a 0.999 decay."""
    return min(decay, (1 + step) / (EMA_WARMUP + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def frame_shape(frames: dict[str, Tensor]) -> tuple[int, tuple[int, ...]]:
    """The number of frames and the shape of one: ``frames["x0"]`` is (N, C, H, W)."""
    x0 = frames["x0"]
    return x0.shape[0], tuple(x0.shape[1:])


# --- checkpoints ----------------------------------------------------------------------------


def save_checkpoint(folder: Path, step: int, objective: nn.Module, ema: nn.Module, opt, info: dict) -> None:
    """``state.safetensors`` (objective + EMA tensors), ``optimizer.pt``, ``train.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"objective.{k}": v for k, v in objective.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    with atomic_path(folder / OPTIMIZER_FILE) as tmp:
        torch.save(opt.state_dict(), tmp)
    write_json_atomic(folder / INFO_FILE, {**info, "step": step})


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's tensors (names and raw bytes): which weights a run started
    from, so that a checkpoint is resumed only by the run that made it, not by the same
    command over other starting weights (``--from`` a set that has since been retrained)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _resume_key(info: dict, saved: dict | None = None) -> dict:
    """What must match to resume: everything but the step reached, the step budget (the
    learning rate is constant, so a run resumed with more ``steps`` trains on exactly as
    one started with them) and the precision (module docstring). A checkpoint ``saved``
    without the starting weights' fingerprint (written before checkpoints had one) is
    matched on the rest."""
    info = json.loads(json.dumps(info))
    info.pop("step", None)
    if saved is not None and "start" not in saved:
        info.pop("start", None)
    for key in RUN_KEYS:
        info.get("config", {}).pop(key, None)
    return info


def load_checkpoint(folder: Path, objective: nn.Module, ema: nn.Module, opt, info: dict,
                    keep_other: bool = False) -> int:
    """The step to resume from: 0 when there is no checkpoint made with the same
    ``info`` (the run's first checkpoint then replaces another run's, or with
    ``keep_other`` another run's is an error). A checkpoint of the same run with a
    smaller step budget is resumed (train longer by asking for more steps); one past
    ``info["config"]["steps"]`` is an error, not silently replaced."""
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        return 0
    saved = json.loads(info_path.read_text())
    if _resume_key(saved) != _resume_key(info, saved):
        if keep_other:
            raise InputError(f"{str(folder)!r} holds the checkpoint of another run (step {saved['step']}; other "
                             "settings or starting weights): rerun that run's command to resume it, or pass "
                             "--overwrite to start this one in its place.")
        return 0
    if int(saved["step"]) > int(info["config"]["steps"]):
        raise InputError(f"the checkpoint in {str(folder)!r} is at step {saved['step']}, past the "
                         f"{info['config']['steps']} steps asked for; ask for at least {saved['step']} "
                         "steps (or delete that folder to start again).")
    device = next(objective.parameters()).device
    state = load_file(str(folder / STATE_FILE), device=str(device))
    objective.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("objective.")})
    ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
    opt.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location=device))
    return int(saved["step"])


# --- distribution (Hugging Face Accelerate) -------------------------------------------------


def make_accelerator(cpu: bool = False):
    """An ``accelerate.Accelerator`` for the launch environment (one process when not
    launched by ``accelerate launch``/``torchrun``). Unused parameters are allowed: an
    objective may leave some out of a step (S3Editor's transforms of the clusters no
    pseudo-edit of that step drew)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # torchrun on a machine without CUDA: Accelerate takes the processes as one
    # distributed CPU job (gloo) only when told to use the CPU.
    cpu = cpu or ("LOCAL_RANK" in os.environ and not torch.cuda.is_available())
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def shard(draws: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
    """Rows [rank·b, (rank+1)·b) of every global-batch tensor, b = its rows / world
    (tensors may have different row counts: a batch's frames and its pair rows)."""
    out = {}
    for k, v in draws.items():
        b = v.shape[0] // world
        out[k] = v[rank * b:(rank + 1) * b]
    return out


def check_batch(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise InputError(f"--batch-size {batch_size} does not split evenly over {world} processes; "
                         f"use a multiple of {world}.")
    return batch_size // world


def check_precision(precision: str) -> None:
    if precision not in TRAIN_PRECISIONS:
        raise InputError(f"training runs in {' or '.join(TRAIN_PRECISIONS)}, not {precision} "
                         "(fp16 would need loss scaling); use --precision bf16 or fp32.")


def mean_over_processes(acc, parts: dict[str, Tensor]) -> dict[str, float]:
    """Every loss term averaged over the processes (one collective), as floats."""
    names = list(parts)
    values = torch.stack([parts[k].detach().float() for k in names])
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="mean")
    return dict(zip(names, values.cpu().tolist()))


# --- the loop -------------------------------------------------------------------------------


def train(
    objective: Objective,
    frames: dict[str, Tensor],
    cfg: TrainConfig,
    checkpoint_dir: Path,
    optimizer: torch.optim.Optimizer,
    *,
    accelerator=None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    keep_other: bool = False,
) -> TrainResult:
    """Train ``objective`` in place; returns the EMA copy of its ``model``. ``frames``:
    the per-frame tensors (N, ...) a batch reads by name, ``"x0"`` the frames
    themselves; ``optimizer`` holds the trainable parameters (its ``OptimizerHooks``,
    if it has them, are called). ``on_step(step, parts)`` runs on the main process only.
    ``keep_other``: refuse to start over a checkpoint of another run in
    ``checkpoint_dir`` (``load_checkpoint``) instead of replacing it."""
    acc = accelerator or make_accelerator()
    world, rank = acc.num_processes, acc.process_index
    for rows in objective.split_rows(cfg.batch_size):
        check_batch(rows, world)
    check_precision(cfg.precision)
    model = objective.model
    if cfg.precision != "fp32":  # bf16 convolutions run fastest channels_last (docs/sampler.md)
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    hooks = optimizer if isinstance(optimizer, OptimizerHooks) else None
    info = {"config": asdict(cfg), "objective": objective.describe(), "world_size": world,
            "start": weights_fingerprint(model)}
    start = load_checkpoint(checkpoint_dir, objective, ema, optimizer, info, keep_other)
    wrapped = acc.prepare(objective)
    num_frames, shape = frame_shape(frames)
    wrapped.train()
    losses: list[dict[str, float]] = []
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * SEED_STRIDE + step)
        torch.manual_seed(cfg.seed * SEED_STRIDE + step + rank)  # dropout
        draws = objective.draw(gen, cfg.batch_size, num_frames, shape)
        batch = gather_batch(objective, shard(draws, rank, world), frames, acc.device)
        with ddim.autocast(acc.device, cfg.precision):
            parts = wrapped(batch)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(parts["loss"])
        if cfg.grad_clip:
            acc.clip_grad_norm_(params, cfg.grad_clip)
        means = mean_over_processes(acc, parts)
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(f"training loss became {means['loss']} at step {step}")
        if hooks is not None:
            hooks.before_step(means["loss"])  # the loss of the iterate before this step
        optimizer.step()
        ema_update(ema, model, ema_decay_at(cfg.ema_decay, step))
        losses.append(means)
        if on_step is not None and acc.is_main_process:
            on_step(step + 1, means)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            if acc.is_main_process:
                save_checkpoint(checkpoint_dir, step + 1, objective, ema, optimizer, info)
            acc.wait_for_everyone()
    if hooks is not None:
        hooks.after_training()
    model.eval()
    return TrainResult(steps=cfg.steps, losses=losses, ema=ema)


@torch.no_grad()
def evaluate(objective: Objective, frames: dict[str, Tensor], batch_size: int, seed: int = 12345,
             batches: int = 2) -> dict[str, float]:
    """Mean loss terms on fixed draws (``seed``), in eval mode: the objective of the
    current weights, comparable before and after training. One process."""
    device = next(objective.parameters()).device
    num_frames, shape = frame_shape(frames)
    was_training = objective.training
    objective.eval()
    total: dict[str, float] = {}
    for b in range(batches):
        gen = torch.Generator().manual_seed(seed * SEED_STRIDE + b)
        draws = objective.draw(gen, batch_size, num_frames, shape)
        batch = gather_batch(objective, draws, frames, device)
        for k, v in objective(batch).items():
            total[k] = total.get(k, 0.0) + float(v) / batches
    objective.train(was_training)
    return total
