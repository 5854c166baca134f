"""UNet speed against the machine's own matmul peak, and the main job's stages.

For each model (``default`` = the bundled weight set, its 64² UNet; ``dva-256`` = DVA's
256² UNet with random weights of its config, UNet only) and each precision (fp32, and
the ``auto`` path: what ``--precision auto`` picks on this device, timed only where it
is not fp32), times a few UNet passes (``model(x_t, t, z_face)`` under the precision's
autocast and memory format, as the DDIM loops call it) and reports:

- s/pass: seconds per image-pass (the fastest timed batch after one warm-up, over the
  batch size; on a shared machine other work only ever adds time), and passes/s;
- GFLOP/s achieved (TFLOP/s on CUDA): FLOPs of one image-pass, counted once with
  ``torch.utils.flop_counter.FlopCounterMode``, over s/pass;
- % of peak: against this run's matmul probe (a few large ``torch.matmul`` calls) in the
  same dtype;
- rel err: ||eps - eps_fp32|| / ||eps_fp32|| on the same inputs.

``--train PRESETS`` times training instead, per preset (e.g. ``default-64,default-128``;
``default-64@112``: that preset's network at 112², its attention at the same levels):
one optimiser step of the preset's UNet (random weights) on the noise-prediction loss,
forward, backward and AdamW, at ``--train-batch`` images, fp32 and the auto precision's
autocast, and what that makes in an hour and in three. DVA's objective (``tune
--objective dva``) puts two frames of each sample through the UNet, so its step at batch
B costs about this row's at 2·B.

``--compile`` adds a row per precision with the eps call through ``torch.compile`` as
``--compile on`` runs it (``s3edit.pipeline.compiled``), with the seconds the first call
took to compile beside it.

The load average (1 minute) at the start and the end is printed with the figures: a
loaded machine makes every figure slower. ``--job`` adds the seconds of each stage of
README's main job, ``s3edit edit examples/astronaut.mp4 --attr Eyeglasses --scale 0.6``
(align, encode, edit, paste through the pipeline functions, in a temporary folder), the
UNet passes the encode and the edit made and, from the FLOPs of one pass, what they
achieved. ``--job-model PRESET`` runs that job with a weight set of the preset's config
with random weights and a random Eyeglasses head instead of the bundled set (``dva-256``
with DVA's sampler and identity rule, as an imported DVA set), ``--job-frames N`` on N
frames of the example clip played forwards and backwards, ``--job-dir`` keeps the job
(an aligned job found there is reused, so a machine without the face kit can time
encode and edit of a job aligned elsewhere) and ``--job-stages`` picks the stages.

    python benchmarks/speed.py                                  # both models, fp32 + auto
    python benchmarks/speed.py --models default --passes 10 --json speed.json
    python benchmarks/speed.py --models default --job --steps 20
    python benchmarks/speed.py --models default --compile            # + torch.compile rows
    python benchmarks/speed.py --models none --train default-64,default-128 --train-batch 16
    python benchmarks/speed.py --models none --train default-64,default-96,default-64@112 --train-batch 16
    python benchmarks/speed.py --device cuda --batch 8 --dva-batch 8 --dva-passes 10
    python benchmarks/speed.py --models none --job --job-model dva-256 --job-frames 300 \
        --job-dir dva300 --job-stages align                         # align here, then on a GPU:
    python benchmarks/speed.py --device cuda --models none --job --job-model dva-256 \
        --job-dir dva300 --job-stages encode,edit --job-batch 32

Threads follow the CLI's rule (``--threads``, else the automatic count; printed). On a
CPU keep DVA's 256² model to a couple of passes (~770 GFLOP each, ~10 s on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from s3edit.model import ddim
from s3edit.model.config import preset
from s3edit.model.unet import UNet
from s3edit.pipeline import options

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "examples" / "astronaut.mp4"
JOB_EDIT = [("Eyeglasses", 0.6)]  # README's main job
JOB_STAGES = ("align", "encode", "edit", "paste")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "cpu"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                platform.processor() or "cpu")


def load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int, budget_s: float) -> float:
    """FLOP/s of the fastest of a few (n x n) @ (n x n) products, within ``budget_s``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up
    sync(device)
    best, spent = float("inf"), 0.0
    for _ in range(10):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return 2 * n ** 3 / best


def probe_peaks(device: torch.device, bf16_native: bool) -> dict[str, float]:
    """Matmul FLOP/s in fp32 and bf16 (an emulated bf16 CPU probe is kept small)."""
    if device.type == "cuda":
        sizes = {"fp32": 8192, "bf16": 8192}
    else:
        sizes = {"fp32": 2048, "bf16": 2048 if bf16_native else 512}
    return {name: matmul_peak(DTYPES[name], device, n, budget_s=2.0) for name, n in sizes.items()}


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, int, int, str]:
    """(model, image size, cond dim, what it is)."""
    if name == "default":
        from s3edit.weights.load import load_weights

        lw = load_weights("default", device)
        model = lw.model.eval().requires_grad_(False)
        return model, lw.size, model.config.face_dim, f"weight set {lw.folder.name}"
    cfg = preset(name)
    torch.manual_seed(0)
    with torch.device(device):
        model = UNet(cfg.unet).eval().requires_grad_(False)
    for p in model.parameters():  # zero-initialised layers too, so eps depends on the input
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    return model, cfg.unet.image_size, cfg.unet.cond_channels, f"preset {name}, random weights"


def flops_per_pass(model, size: int, cond_dim: int, device: torch.device) -> float:
    x = torch.randn(1, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(1, dtype=torch.long, device=device), torch.randn(1, cond_dim, device=device))
    return float(counter.get_total_flops())


def eps_call(model, x, t, c, precision: str):
    """One UNet pass as the DDIM loops make it: channels_last and autocast below fp32."""
    if precision != "fp32":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), ddim.autocast(x.device, precision):
        return model(x, t, c).float()


def time_passes(model, inputs, precision: str, passes: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """(fastest seconds of one batched pass after a warm-up, eps of the warm-up)."""
    eps = eps_call(model, *inputs, precision)
    sync(device)
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        eps_call(model, *inputs, precision)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, eps


def measure_model(name: str, batch: int, passes: int, precisions: list[str], peaks: dict[str, float],
                  device: torch.device, compile: bool = False) -> list[dict]:
    model, size, cond_dim, what = build(name, device)
    flops = flops_per_pass(model, size, cond_dim, device)
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(batch, 3, size, size, generator=g).to(device),
              torch.randint(0, ddim.NUM_TRAIN_TIMESTEPS, (batch,), generator=g).to(device),
              torch.randn(batch, cond_dim, generator=g).to(device))
    rows, reference = [], None
    for precision, compiled in [(p, False) for p in precisions] + [(p, True) for p in precisions if compile]:
        if precision != "fp32":
            options.prepare_model(model, precision)
        compile_s = None
        if compiled:
            from s3edit.pipeline.compiled import compile_eps

            fallback = compile_eps(model, device)
            t0 = time.perf_counter()
            eps_call(model, *inputs, precision)  # the first call of this shape compiles
            sync(device)
            compile_s = time.perf_counter() - t0
            if fallback.failed is not None:
                compiled = "failed"
        seconds, eps = time_passes(model, inputs, precision, passes, device)
        if compiled:
            from s3edit.pipeline.compiled import uncompile_eps

            uncompile_eps(model)
        reference = eps if precision == "fp32" and not compiled else reference
        err = ((eps - reference).norm() / reference.norm()).item() if reference is not None else float("nan")
        per_pass = seconds / batch
        peak = peaks.get(precision if precision in peaks else "bf16")
        rows.append(dict(model=name, what=what, size=size, precision=precision, compiled=compiled,
                         compile_s=compile_s, batch=batch, passes=passes,
                         s_per_pass=per_pass, passes_per_s=1 / per_pass, flops_per_pass=flops,
                         flops_per_s=flops / per_pass, peak_flops_per_s=peak,
                         of_peak=flops / per_pass / peak if peak else None, rel_err=err))
    return rows


def training_preset(name: str):
    """The config of ``name``: a preset, or ``PRESET@SIZE``, the preset's network at
    another crop side, its attention at the same levels (resolutions scaled by
    SIZE / the preset's side): which crop a network's training fits in a budget."""
    base, _, size = name.partition("@")
    cfg = preset(base)
    if size:
        old, new = cfg.unet.image_size, int(size)
        levels = len(cfg.unet.channel_mult) - 1
        if new % 2 ** levels or any(r * new % old for r in cfg.unet.attention_resolutions):
            raise SystemExit(f"{name}: {base} halves its crop {levels} times and attends at "
                             f"{cfg.unet.attention_resolutions} of {old} px; {new} px does not scale to whole sides")
        cfg.unet.image_size = new
        cfg.unet.attention_resolutions = tuple(r * new // old for r in cfg.unet.attention_resolutions)
    return cfg


def measure_training(name: str, batch: int, steps: int, precisions: list[str], device: torch.device) -> list[dict]:
    """Seconds per optimiser step of preset ``name``'s UNet (``training_preset``) at
    ``batch`` images (the fastest of ``steps`` after one warm-up step), per precision."""
    cfg = training_preset(name)
    rows = []
    for precision in precisions:
        torch.manual_seed(0)
        with torch.device(device):
            model = UNet(cfg.unet).train()
        if precision != "fp32":
            options.prepare_model(model, precision)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        size = cfg.unet.image_size
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, size, size, generator=g).to(device)
        t = torch.randint(0, ddim.NUM_TRAIN_TIMESTEPS, (batch,), generator=g).to(device)
        c = torch.randn(batch, cfg.unet.cond_channels, generator=g).to(device)
        noise = torch.randn(batch, 3, size, size, generator=g).to(device)
        if precision != "fp32":
            x = x.contiguous(memory_format=torch.channels_last)
        best = float("inf")
        for i in range(steps + 1):
            t0 = time.perf_counter()
            with ddim.autocast(device, precision):
                loss = (model(x, t, c).float() - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(device)
            best = best if i == 0 else min(best, time.perf_counter() - t0)
        rows.append(dict(preset=name, size=size, precision=precision, batch=batch,
                         params=sum(p.numel() for p in model.parameters()), s_per_step=best,
                         steps_per_hour=3600 / best, images_per_s=batch / best))
    return rows


def job_weights(name: str, folder: Path) -> str:
    """The weight set the job runs with: ``default`` (the bundled set), or a preset's
    config with random weights and heads written to ``folder``
    (``random_weight_set``): speed does not depend on the weights. ``dva-256`` gets DVA's
    sampler and identity rule, as an imported DVA set. A set already in ``folder`` (from an
    earlier run with this ``--job-dir``) is reused."""
    if name == "default" or folder.is_dir():
        return "default" if name == "default" else str(folder)
    from s3edit.weights.weightset import DVA_RULES, random_weight_set

    rules = DVA_RULES if name == "dva-256" else {}
    return str(random_weight_set(folder, name, name=f"{name} (random weights)", meta=rules))


def run_job(device: torch.device, steps: int | None, fixed_point: int | None, model: str = "default",
            frames: int | None = None, folder: Path | None = None, stages: tuple[str, ...] = JOB_STAGES,
            batch_size: int | None = None, compile: str = "auto") -> dict:
    """Seconds of README's main job, stage by stage (module docstring), in ``folder``
    (else a temporary one), and the UNet passes and FLOPs of its encode and edit."""
    with tempfile.TemporaryDirectory(prefix="s3edit-speed-") as tmp:
        return _run_job(device, steps, fixed_point, model, frames, Path(folder or tmp), stages, batch_size, compile)


def _run_job(device, steps, fixed_point, model, frames, folder, stages, batch_size, compile) -> dict:
    from s3edit.job import Job
    from s3edit.pipeline.edit import CONFINED_EDIT_START, edit_job, resolve_edit
    from s3edit.pipeline.encode import encode_job

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(compile=compile, **({"batch_size": batch_size} if batch_size else {}))
    job_dir, timings = folder / "job.s3job", {}
    if "align" in stages:
        from s3edit.pipeline.align import align_video

        clip = CLIP
        if frames is not None:
            from memory import make_clip  # benchmarks/memory.py: the example clip to any length

            clip = folder / f"clip{frames}.mp4"
            if not clip.is_file():
                make_clip(clip, frames)
        if model == "default":
            from s3edit.weights.load import load_weights

            size = load_weights("default", torch.device("cpu")).size
        else:
            size = preset(model).image_size
        t0 = time.perf_counter()
        job = align_video(clip, job_dir, size=size)
        timings["align"] = time.perf_counter() - t0
    else:
        job = Job.open(job_dir)
    if not {"encode", "edit", "paste"} & set(stages):
        return dict(timings, frames=len(job.aligned_frames().indices), model=model)
    run = options.run_options(job_weights(model, folder / "weights"), steps=steps, device=device.type,
                              fixed_point=fixed_point, **kwargs)
    n = len(job.aligned_frames().indices)
    passes = {}
    if "encode" in stages or "edit" in stages:
        t0 = time.perf_counter()
        encode_job(job, run)
        timings["encode"] = time.perf_counter() - t0
        passes["encode"] = n * ddim.encode_passes(run.steps, run.sampler.value, run.fixed_point)
    result = None
    if "edit" in stages or "paste" in stages:
        t0 = time.perf_counter()
        result = edit_job(job, JOB_EDIT, run)
        timings["edit"] = time.perf_counter() - t0
        confined = resolve_edit(JOB_EDIT, run, "auto").confined
        passes["edit"] = n * (ddim.region_passes(run.steps, CONFINED_EDIT_START) if confined else run.steps)
    if "paste" in stages:
        from s3edit.pipeline.run import paste_edit

        t0 = time.perf_counter()
        paste_edit(result, folder / "out.mp4", overwrite=True)
        timings["paste"] = time.perf_counter() - t0
    lw = run.weights
    flops = flops_per_pass(lw.model, lw.size, lw.model.config.face_dim, device)
    return dict(timings, frames=n, steps=run.steps, fixed_point=run.fixed_point, sampler=run.sampler.value,
                model=model, size=lw.size, batch=run.batch_size, precision=run.precision, passes=passes,
                compiled=options.pick_compile(compile, device),
                flops_per_pass=flops)


def job_line(job: dict, peaks: dict[str, float], unit: str, scale: float) -> str:
    """README's main job in one line: the stages' seconds, then what the encode and
    the edit achieved (UNet passes per second, FLOP/s and the share of the probe's peak
    in the job's precision)."""
    what = "README's main job" if job.get("model", "default") == "default" else f"the main job with {job['model']}"
    head = f"{what} ({job['frames']} frames"
    if "steps" in job:
        head += (f", {job['size']}², {job['sampler']} sampler, {job['steps']} steps, {job['fixed_point']} "
                 f"fixed-point corrections, batch {job['batch']}, {job['precision']}"
                 + (", compiled" if job.get("compiled") else ""))
    line = head + "): " + ", ".join(f"{k} {job[k]:.1f} s" for k in JOB_STAGES if k in job)
    for stage, passes in job.get("passes", {}).items():
        rate = job["flops_per_pass"] * passes / job[stage]
        peak = peaks.get(job["precision"]) or peaks["bf16"]
        line += (f"; {stage}: {passes} passes, {passes / job[stage]:.3g} passes/s, {rate / scale:.3g} {unit}, "
                 f"{100 * rate / peak:.1f} % of the {job['precision']} peak")
    return line


def table(report: dict) -> str:
    cuda = report["device"].startswith("cuda")
    unit, scale = ("TFLOP/s", 1e12) if cuda else ("GFLOP/s", 1e9)
    peaks = report["peak_flops_per_s"]
    lines = [
        f"device: {report['device_name']}; torch {report['torch']}; threads {report['threads']}; "
        f"--precision auto here: {report['auto_reason'].removeprefix('precision: ')}",
        f"matmul peak (probe): fp32 {peaks['fp32'] / scale:.3g} {unit}, bf16 {peaks['bf16'] / scale:.3g} {unit}",
        f"load average (1 min): {report['load_start']:.2f} at start, {report['load_end']:.2f} at end",
    ]
    if report["rows"]:
        lines += ["", f"| model | precision | batch | s/pass | passes/s | GFLOP/pass | {unit} | % of peak | rel err |",
                  "|" + "---|" * 9]
    for r in report["rows"]:
        how = r["precision"]
        if r.get("compiled"):
            how += (" compiled (failed: eager)" if r["compiled"] == "failed"
                    else f" compiled ({r['compile_s']:.0f} s to compile)")
        lines.append(f"| {r['model']} {r['size']}² | {how} | {r['batch']} | {r['s_per_pass']:.4g} | "
                     f"{r['passes_per_s']:.3g} | {r['flops_per_pass'] / 1e9:.3g} | "
                     f"{r['flops_per_s'] / scale:.3g} | {100 * r['of_peak']:.1f} | {r['rel_err']:.2e} |")
    if report.get("train"):
        lines += ["", "| training: preset | precision | batch | M params | s/step | images/s | steps in 1 h | in 3 h |",
                  "|" + "---|" * 8]
        for r in report["train"]:
            lines.append(f"| {r['preset']} {r['size']}² | {r['precision']} | {r['batch']} | {r['params'] / 1e6:.1f} | "
                         f"{r['s_per_step']:.3g} | {r['images_per_s']:.3g} | {r['steps_per_hour']:.0f} | "
                         f"{3 * r['steps_per_hour']:.0f} |")
    if report.get("job"):
        lines += ["", job_line(report["job"], report["peak_flops_per_s"], unit, scale)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,dva-256", type=lambda s: s.split(","),
                        help="default (the bundled set) and/or a preset name, e.g. dva-256; none for no UNet rows")
    parser.add_argument("--batch", type=int, default=8, help="batch of the default set")
    parser.add_argument("--passes", type=int, default=5, help="timed passes of the default set (after 1 warm-up)")
    parser.add_argument("--dva-batch", type=int, default=1, help="batch of a preset model")
    parser.add_argument("--dva-passes", type=int, default=2, help="timed passes of a preset model")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the CLI's automatic count)")
    parser.add_argument("--job", action="store_true", help="also time README's main job, stage by stage")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of --job (default: the CLI's)")
    parser.add_argument("--job-model", default="default",
                        help="weights of --job: default (the bundled set) or a preset with random weights, e.g. dva-256")
    parser.add_argument("--job-frames", type=int, default=None,
                        help="frames of --job's clip (default: the example clip's own)")
    parser.add_argument("--job-dir", type=Path, default=None,
                        help="keep --job's clip, weights and job here (an aligned job found there is reused)")
    parser.add_argument("--job-stages", default=",".join(JOB_STAGES), type=lambda s: tuple(s.split(",")),
                        help="stages of --job (default: all); encode,edit times a job aligned in --job-dir")
    parser.add_argument("--job-compile", default="auto", choices=["auto", "on", "off"],
                        help="torch.compile in --job (default: the CLI's auto)")
    parser.add_argument("--job-batch", type=int, default=None, help="frames per UNet pass in --job (default: the CLI's)")
    parser.add_argument("--fixed-point", type=int, default=None,
                        help="fixed-point corrections per encode step of --job (default: the CLI's)")
    parser.add_argument("--train", default="", type=lambda s: [n for n in s.split(",") if n],
                        help="presets whose training step to time, e.g. default-64,default-128")
    parser.add_argument("--train-batch", type=int, default=16, help="images per training step")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--precisions", default="fp32,auto", type=lambda s: s.split(","),
                        help="precisions of the UNet and training rows: fp32, bf16 and/or auto (default: fp32,auto)")
    parser.add_argument("--compile", action="store_true", help="also time each precision through torch.compile")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    unknown = set(args.job_stages) - set(JOB_STAGES)
    if unknown:
        parser.error(f"--job-stages: unknown stage(s) {sorted(unknown)}; choose from {', '.join(JOB_STAGES)}")

    options.set_threads(args.threads)
    threads = options.apply_threads()
    device = options.pick_device(args.device)
    auto = options.pick_precision("auto", device)
    load_start = load_avg()
    peaks = probe_peaks(device, bf16_native=device.type == "cuda" or bool(options.cpu_bf16_flags()))
    precisions = list(dict.fromkeys(auto if p == "auto" else p for p in args.precisions))
    rows = []
    for name in (m for m in args.models if m != "none"):
        default = name == "default"
        rows += measure_model(name, args.batch if default else args.dva_batch,
                              args.passes if default else args.dva_passes, precisions, peaks, device,
                              args.compile)
    train = [r for name in args.train
             for r in measure_training(name, args.train_batch, args.train_steps, precisions, device)]
    job = run_job(device, args.steps, args.fixed_point, args.job_model, args.job_frames, args.job_dir,
                  args.job_stages, args.job_batch, args.job_compile) if args.job else None
    report = dict(
        device=str(device), torch=torch.__version__, threads=threads, platform=platform.platform(),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        auto_precision=auto, auto_reason=options.describe_precision(auto, device),
        peak_flops_per_s=peaks, load_start=load_start, load_end=load_avg(), rows=rows,
        job=job, train=train)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
