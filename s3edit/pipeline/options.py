"""What a model stage runs with, resolved once and passed down as one object.

    run = run_options(weights="dva", steps=100, device="auto", job=job)
    encode_job(job, run); edit_job(job, [("Eyeglasses", 0.6)], run)

``run_options`` loads the weights once, picks the device, the precision and the DDIM
sampler, reads the set's identity rule, and checks steps and batch size, so the stages
below it re-derive nothing. Every choice a user makes is an Enum here; a bad value
raises ``InputError``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from s3edit import console
from s3edit.errors import InputError, WeightsError
from s3edit.job import Job
from s3edit.model import ddim
from s3edit.pipeline import compiled
from s3edit.pipeline.shard import local_cuda_index
from s3edit.weights.load import LoadedWeights, load_weights
from s3edit.weights.weightset import IDENTITY_KEY, S3EDIT_RULES, SAMPLER_KEY

DEFAULT_BATCH = 8
ENCODE_STAGE = "encode"


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"  # bf16 on CPUs with bf16 matrix instructions, else fp32 (CUDA too: pick_precision)
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Compile(str, Enum):
    """``torch.compile`` of the network's eps call (``s3edit.pipeline.compiled``)."""

    auto = "auto"  # off: not measured to pay on a CPU or a GPU (pick_compile)
    off = "off"
    on = "on"


class Region(str, Enum):
    auto = "auto"  # an attribute with a known region is confined to it
    whole = "whole"  # the edit may change the whole face


class Sampler(str, Enum):
    """The DDIM encode/decode pair (``s3edit.model.ddim``, docs/sampler.md)."""

    s3edit = "s3edit"  # exact inversion: encode starts at alpha_bar = 1, S steps, no clipping
    dva = "dva"  # DVA's own: encode starts at alpha_bar[0], S - 1 steps; x0 clipped both ways


class IdentityRule(str, Enum):
    """How encode makes the clip identity z_id_rep from the frames' z_id (a weight set's
    config ``identity``; docs/edit.md)."""

    l2norm_mean = "l2norm_mean"  # l2norm(mean_i z_id_i): s3edit's
    mean = "mean"  # mean_i z_id_i: DVA's editing script


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
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error.
    Under torchrun or accelerate a process's GPU is cuda:LOCAL_RANK (``shard``)."""
    name = choice(Device, name, "device")
    if name is Device.cuda and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but this machine has no usable CUDA GPU; "
                         "use --device cpu (or auto).")
    if name is Device.auto:
        name = Device.cuda if torch.cuda.is_available() else Device.cpu
    index = local_cuda_index() if name is Device.cuda else None
    return torch.device(name.value if index is None else f"cuda:{index}")


# CPU flags (Linux /proc/cpuinfo) of native bf16 matrix instructions: Intel AMX-BF16
# (Sapphire Rapids on) and AVX512-BF16 (Cooper Lake, AMD Zen 4 on). Without them bf16
# is emulated and runs 7-60x slower than fp32 (docs/sampler.md, "Precision").
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> list[str]:
    """The native bf16 instruction sets this CPU lists (empty when none, or no cpuinfo)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in BF16_CPU_FLAGS if f in flags]


def pick_precision(name: str | Precision, device: torch.device,
                   cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> ddim.Precision:
    """``auto`` -> bf16 on a CPU with native bf16 (``cpu_bf16_flags``), fp32 on any other
    CPU and on CUDA, where PyTorch runs fp32 convolutions on the tensor cores in TF32 and
    DVA's 256² UNet made 1.3 times the passes per second it made in bf16 autocast with
    channels_last (docs/sampler.md, "Speed"); fp16 on the CPU is refused."""
    name = choice(Precision, name, "precision")
    if name is Precision.auto:
        return "bf16" if device.type == "cpu" and cpu_bf16_flags(cpuinfo) else "fp32"
    if name is Precision.fp16 and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU.")
    return name.value  # type: ignore[return-value]


def describe_precision(precision: ddim.Precision, device: torch.device,
                       cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """One line saying what the UNet runs in on ``device``, and on a CPU why."""
    flags = cpu_bf16_flags(cpuinfo) if device.type == "cpu" else []
    why = ""
    if device.type == "cpu":
        why = f" (this CPU has {', '.join(flags)})" if flags else " (this CPU has no native bf16 instructions)"
    if precision == "fp32":
        return f"precision: fp32 on {device.type}{why}"
    return f"precision: {precision} autocast, channels_last, on {device.type}{why}; DDIM updates in fp32"


def prepare_model(model: torch.nn.Module, precision: ddim.Precision) -> torch.nn.Module:
    """The network in the memory format that suits ``precision``: channels_last for
    bf16/fp16 (2.3-2.5x faster bf16 convolutions on CPUs with AMX), as loaded for fp32."""
    if precision != "fp32":
        model.to(memory_format=torch.channels_last)
    return model


def pick_compile(name: str | Compile, device: torch.device) -> bool:
    """``auto`` -> off on every device: on a CPU inductor took minutes to compile the 64-px
    UNet and its pass was no faster, and on CUDA (max-autotune) it had not finished compiling
    DVA's 256² UNet by the end of a three-minute run (docs/sampler.md, "Speed")."""
    name = choice(Compile, name, "compile")
    return name is Compile.on


THREADS_ENV = "OMP_NUM_THREADS"
_threads = {"asked": None, "applied": None, "why": ""}


LOAD_SAMPLES = 5  # reads of the runnable count, LOAD_INTERVAL_S apart
LOAD_INTERVAL_S = 0.02


def machine_load(samples: int = LOAD_SAMPLES, interval_s: float = LOAD_INTERVAL_S) -> float:
    """The load other processes put on this machine: the 1-minute load average, but no
    more than the tasks runnable beside this one (/proc/loadavg), so the load this
    process's own earlier stages left in the average does not count. The runnable count
    is the least of ``samples`` reads ``interval_s`` apart: a process that competes for
    the CPUs is runnable in every read, a blip (a short-lived command, a kernel thread)
    is not, and should not cost a long run half its threads."""
    try:
        average, runnable = float("inf"), None
        for i in range(samples):
            if i:
                time.sleep(interval_s)
            fields = Path("/proc/loadavg").read_text().split()
            average = min(average, float(fields[0]))
            now = max(int(fields[3].split("/")[0]) - 1, 0)
            runnable = now if runnable is None else min(runnable, now)
        return min(average, runnable)
    except (OSError, IndexError, ValueError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def auto_threads(cpus: int | None = None, load: float | None = None, world_size: int | None = None,
                 env: dict | None = None) -> tuple[int, str]:
    """The CPU threads for torch and why: ``OMP_NUM_THREADS`` when set, else the CPUs
    this process may run on less the load from other processes (``machine_load``,
    rounded), shared among the processes torchrun started on this machine
    (``LOCAL_WORLD_SIZE``); at least 1. Oversubscribed, OpenMP threads wait on each
    other: 2 threads on a loaded 2-CPU machine ran 10-20x slower than 1. Each argument
    None: read from this machine."""
    env = os.environ if env is None else env
    value = env.get(THREADS_ENV, "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value), f"{THREADS_ENV}={value}"
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = machine_load()
    if world_size is None:
        ws = env.get("LOCAL_WORLD_SIZE", "").strip()
        world_size = int(ws) if ws.isdigit() and int(ws) >= 1 else 1
    free = max(cpus - round(load), 1)
    threads = max(free // world_size, 1)
    why = f"{cpus} CPUs, load {load:.1f}" + (f", {world_size} processes on this machine" if world_size > 1 else "")
    return threads, why


def set_threads(threads: int | None) -> None:
    """``--threads N`` (None: automatic, ``auto_threads``); applied by ``apply_threads``."""
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}.")
    _threads["asked"] = threads


def apply_threads() -> int:
    """torch's CPU threads, set once per process at the start of a model stage (a rerun
    in the same process keeps the first choice): ``--threads`` when given, else
    ``auto_threads``; the choice is noted once the run's weights are loaded (a user's
    mistake found before that is the only line printed)."""
    if _threads["applied"] is not None:
        return _threads["applied"]
    asked = _threads["asked"]
    threads, why = (asked, "--threads") if asked is not None else auto_threads()
    torch.set_num_threads(threads)
    _threads["applied"], _threads["why"] = threads, why
    return threads


def describe_threads() -> str:
    """The note line of ``apply_threads``' choice (empty before it ran)."""
    if _threads["applied"] is None:
        return ""
    return f"threads: {_threads['applied']} ({_threads.get('why', '--threads')})"


def check_steps(steps: int, sampler: Sampler = Sampler.s3edit) -> int:
    if not 1 <= steps <= ddim.NUM_TRAIN_TIMESTEPS:
        raise InputError(f"--steps must be between 1 and {ddim.NUM_TRAIN_TIMESTEPS}, got {steps}.")
    if sampler is Sampler.dva and ddim.NUM_TRAIN_TIMESTEPS % steps:
        raise InputError(f"--sampler dva takes --steps that divide {ddim.NUM_TRAIN_TIMESTEPS} (e.g. 20, 50, "
                         f"100, 200), as DVA's spacing does; got {steps}.")
    return steps


def check_fixed_point(fixed_point: int, sampler: Sampler = Sampler.s3edit) -> int:
    if fixed_point < 0:
        raise InputError(f"--fixed-point must be 0 or more, got {fixed_point}.")
    if sampler is Sampler.dva and fixed_point:
        raise InputError("--fixed-point goes with --sampler s3edit; DVA's sampler encodes as DVA does, "
                         "without corrections.")
    return fixed_point


def set_rules(lw: LoadedWeights) -> tuple[Sampler, IdentityRule]:
    """A weight set's default sampler and its identity rule, from its config.json
    (absent: s3edit's); a value this s3edit does not know is a WeightsError."""
    values = []
    for key, enum in ((SAMPLER_KEY, Sampler), (IDENTITY_KEY, IdentityRule)):
        value = lw.ws.meta.get(key, S3EDIT_RULES[key])
        try:
            values.append(enum(value))
        except ValueError:
            names = ", ".join(m.value for m in enum)
            raise WeightsError(f"weight set {str(lw.folder)!r} names {key} {value!r} in its config.json; this "
                               f"s3edit knows {names}, so update s3edit or fix the set.") from None
    return values[0], values[1]


def parse_frames(spec: str | None) -> tuple[int, int | None] | None:
    """``--frames A:B`` -> (A, B): frames A .. B - 1 (``A:`` to the end, ``:B`` from the
    first); None for None."""
    if spec is None:
        return None
    first, sep, last = spec.partition(":")
    try:
        start = int(first) if first.strip() else 0
        stop = int(last) if last.strip() else None
    except ValueError:
        start = stop = -1
    if not sep or start < 0 or (stop is not None and stop <= start):
        raise InputError(f"--frames {spec!r} is not a range of frames; write A:B with 0 <= A < B "
                         "(frame A up to, not including, frame B), A: or :B, e.g. 100:150.")
    return start, stop


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    return batch_size


@dataclass(frozen=True)
class RunOptions:
    """A model stage's options, resolved: the loaded weights, the torch device, the
    autocast precision of the UNet calls, DDIM steps, frames per UNet pass, the DDIM
    sampler and the weight set's identity rule."""

    weights: LoadedWeights
    device: torch.device
    precision: ddim.Precision
    steps: int
    batch_size: int
    sampler: Sampler = Sampler.s3edit
    identity: IdentityRule = IdentityRule.l2norm_mean
    compiled: bool = False  # the eps call runs through torch.compile (s3edit.pipeline.compiled)
    fixed_point: int = 0  # corrections per encode step (ddim.ddim_encode)


def job_weights(job: Job | None) -> Path | None:
    """The folder of the weight set ``job`` was encoded with, when it still exists."""
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    path = entry.get("weights_path") if entry.get("done") else None
    return Path(path) if path and Path(path).is_dir() else None


def job_steps(job: Job | None) -> int | None:
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    steps = entry.get("params", {}).get("steps")
    return int(steps) if steps is not None else None


def job_fixed_point(job: Job | None, sampler: Sampler = Sampler.s3edit) -> int | None:
    """The fixed-point corrections the job's x_T was encoded with by ``sampler`` (0 when
    its params name none); None without an encode stage or when another sampler made it."""
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    params = entry.get("params")
    if not params or params.get("sampler") != sampler.value:
        return None
    return int(params.get("fixed_point", 0))


def resolve_steps(steps: int | None, fixed_point: int | None, sampler: Sampler,
                  job: Job | None) -> tuple[int, int]:
    """Steps and fixed-point corrections of a run: what was asked, else the job's (its
    corrections when its x_T was made by ``sampler``), else ``ddim.default_steps(sampler)``."""
    default_steps, default_fixed = ddim.default_steps(sampler.value)
    if steps is None:
        steps = job_steps(job) or default_steps
    if fixed_point is None:
        recorded = job_fixed_point(job, sampler)
        fixed_point = recorded if recorded is not None else default_fixed
    return steps, fixed_point


def job_sampler(job: Job | None, lw: LoadedWeights) -> Sampler | None:
    """The sampler that made the job's x_T, when it was made with the weights ``lw``."""
    entry = (job.stage(ENCODE_STAGE) or {}) if job is not None else {}
    params = entry.get("params", {})
    if params.get("weights") != lw.fingerprint or params.get("sampler") not in {m.value for m in Sampler}:
        return None
    return Sampler(params["sampler"])


def run_options(
    weights: str | os.PathLike | LoadedWeights | None = None,
    *,
    steps: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str | Device = Device.auto,
    precision: str | Precision = Precision.auto,
    job: Job | None = None,
    sampler: str | Sampler | None = None,
    compile: str | Compile = Compile.auto,
    compile_backend: str | Callable = "inductor",
    fixed_point: int | None = None,
) -> RunOptions:
    """Resolve once: ``weights`` (a name, a folder, weights already loaded, or None: the
    set ``job`` was encoded with, else the registry's default), ``steps`` (None: the
    job's encode steps, else the sampler's default, ``ddim.default_steps``), device, precision, ``sampler``
    (None: the job's, when it was encoded with these weights, else the set's default),
    ``fixed_point`` (corrections per encode step; None: the job's, else the sampler's
    default; ``resolve_steps``) and ``compile`` (``pick_compile``; ``compile_backend``: torch.compile's backend); the
    identity rule is the set's. Sets torch's CPU threads first (``apply_threads``)."""
    apply_threads()
    asked = choice(Sampler, sampler, "sampler") if sampler is not None else None
    if steps is not None:  # what the user gave is checked before the weights load
        check_steps(steps, asked or Sampler.s3edit)
    if fixed_point is not None:
        check_fixed_point(fixed_point, asked or Sampler.s3edit)
    check_batch_size(batch_size)
    dev = pick_device(device)
    prec = pick_precision(precision, dev)
    if not isinstance(weights, LoadedWeights):
        weights = load_weights(weights if weights is not None else job_weights(job), dev)
    prepare_model(weights.model, prec)
    console.note(describe_precision(prec, dev))
    if dev.type == "cpu" and describe_threads():
        console.note(describe_threads())
    use_compile = pick_compile(compile, dev)
    if use_compile:
        compiled.compile_eps(weights.model, dev, backend=compile_backend)
        backend = compile_backend if isinstance(compile_backend, str) else getattr(compile_backend, "__name__", "?")
        console.note(f"compile: torch.compile ({backend}) of the UNet; the first pass of each batch "
                     "size compiles it")
    else:
        compiled.uncompile_eps(weights.model)
    default, identity = set_rules(weights)
    chosen = asked or job_sampler(job, weights) or default
    steps, fixed_point = resolve_steps(steps, fixed_point, chosen, job)
    check_steps(steps, chosen)
    check_fixed_point(fixed_point, chosen)
    return RunOptions(weights, dev, prec, steps, batch_size, chosen, identity, use_compile, fixed_point)
