"""What a model stage runs with, resolved once and passed down as one object.

    run = run_options(weights="dva", steps=100, device="auto", job=job)
    encode_job(job, run); edit_job(job, [("Eyeglasses", 0.6)], run)

``run_options`` loads the weights once, picks the device and the precision, and checks
steps and batch size, so the stages below it re-derive nothing. Every choice a user
makes is an Enum here; a bad value raises ``InputError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from s3edit.errors import InputError
from s3edit.job import Job
from s3edit.model import ddim
from s3edit.weights.load import LoadedWeights, load_weights

DEFAULT_BATCH = 8
ENCODE_STAGE = "encode"


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on CUDA, fp32 on the CPU
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Region(str, Enum):
    auto = "auto"  # an attribute with a known region is confined to it
    whole = "whole"  # the edit may change the whole face


def choice(enum: type[Enum], value: str | Enum, what: str) -> Enum:
    """``value`` as a member of ``enum``; anything else is one InputError sentence."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        names = ", ".join(m.value for m in enum)
        raise InputError(f"unknown {what} {value!r}; choose one of {names}.") from None


def pick_device(name: str | Device = Device.auto) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    name = choice(Device, name, "device")
    if name is Device.cuda and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but this machine has no usable CUDA GPU; "
                         "use --device cpu (or auto).")
    if name is Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name.value)


def pick_precision(name: str | Precision, device: torch.device) -> ddim.Precision:
    """``auto`` -> bf16 autocast on CUDA, fp32 on the CPU; fp16 on the CPU is refused."""
    name = choice(Precision, name, "precision")
    if name is Precision.auto:
        return ddim.default_precision(device)
    if name is Precision.fp16 and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU.")
    return name.value  # type: ignore[return-value]


def check_steps(steps: int) -> int:
    if not 1 <= steps <= ddim.NUM_TRAIN_TIMESTEPS:
        raise InputError(f"--steps must be between 1 and {ddim.NUM_TRAIN_TIMESTEPS}, got {steps}.")
    return steps


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    return batch_size


@dataclass(frozen=True)
class RunOptions:
    """A model stage's options, resolved: the loaded weights, the torch device, the
    autocast precision of the UNet calls, DDIM steps and frames per UNet pass."""

    weights: LoadedWeights
    device: torch.device
    precision: ddim.Precision
    steps: int
    batch_size: int


def job_weights(job: Job | None) -> Path | None:
    """The folder of the weight set ``job`` was encoded with, when it still exists."""
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    path = entry.get("weights_path") if entry.get("done") else None
    return Path(path) if path and Path(path).is_dir() else None


def job_steps(job: Job | None) -> int | None:
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    steps = entry.get("params", {}).get("steps")
    return int(steps) if steps is not None else None


def run_options(
    weights: str | os.PathLike | LoadedWeights | None = None,
    *,
    steps: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str | Device = Device.auto,
    precision: str | Precision = Precision.auto,
    job: Job | None = None,
) -> RunOptions:
    """Resolve once: ``weights`` (a name, a folder, weights already loaded, or None: the
    set ``job`` was encoded with, else the registry's default), ``steps`` (None: the
    job's encode steps, else ``ddim.DEFAULT_STEPS``), device and precision."""
    steps = steps if steps is not None else (job_steps(job) or ddim.DEFAULT_STEPS)
    check_steps(steps)
    check_batch_size(batch_size)
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    if not isinstance(weights, LoadedWeights):
        weights = load_weights(weights if weights is not None else job_weights(job), dev)
    return RunOptions(weights, dev, prec, steps, batch_size)
