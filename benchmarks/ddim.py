"""DDIM encode/decode speed: UNet passes per second and seconds per frame.

For each model configuration (``small`` = the small-64 preset; ``full`` = DVA's 256²
UNet, 190.6 M parameters), precision (fp32, bf16 autocast) and batch size, times a few
real ``ddim_encode`` and ``ddim_decode`` steps (one UNet pass per frame per step) and
reports (from the fastest timed step of each cell: on a shared machine other work
only ever adds time):

- passes/s: frame-passes per second (batch / seconds per batched step);
- first edit s/frame: encode + decode at ``--steps`` DDIM steps (a new clip);
- further edit s/frame: decode only (x_T is cached by `s3edit encode`);
- ref s/frame: DVA's reference scripts, fp32, batch 4, 3 x T passes per frame (encode
  T, render the reconstruction T, render the edit T; T = 1000), from the fp32 batch-4
  pass rate of the same configuration.

    python benchmarks/ddim.py                                  # small: fp32/bf16 x 1/4/8
    python benchmarks/ddim.py --configs full --batches 1,4 --measure-steps 1
    python benchmarks/ddim.py --device cuda --configs small,full --measure-steps 10

The UNet weights are random (speed does not depend on them). On a CPU keep the full
configuration to a handful of passes (one pass is ~771 GFLOP at 256²).
"""

from __future__ import annotations

import argparse
import time

import torch

from s3edit.model import ddim
from s3edit.model.config import preset
from s3edit.model.unet import UNet

CONFIGS = {"small": "small-64", "full": "dva-256"}
REFERENCE_BATCH = 4  # DVA's editing scripts: --batch_size 4, fp32
REFERENCE_PASSES = 3 * ddim.NUM_TRAIN_TIMESTEPS  # encode T + reconstruction T + edit T


def build(config: str, device: torch.device) -> tuple[UNet, int, int]:
    cfg = preset(CONFIGS[config])
    model = UNet(cfg.unet).to(device).eval().requires_grad_(False)
    return model, cfg.unet.image_size, cfg.unet.cond_channels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(fn, steps: int, device: torch.device) -> float:
    """Seconds of one DDIM step (one batched UNet pass + update): the fastest of
    ``steps`` timed steps after a warm-up step. The minimum, not the mean: on a shared
    machine other processes only ever add time."""
    fn(1, None)  # warm-up: allocations, kernels, autotuning
    stamps = []

    def stamp(_):
        sync(device)
        stamps.append(time.perf_counter())

    sync(device)
    stamps.append(time.perf_counter())
    fn(steps, stamp)
    return min(b - a for a, b in zip(stamps, stamps[1:]))


def measure(model, size, cond_dim, batch, precision, steps, device) -> tuple[float, float]:
    """(encode, decode) seconds per batched step."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    c = torch.randn(batch, cond_dim, generator=g).to(device)
    enc = seconds_per_step(lambda s, cb: ddim.ddim_encode(model, x, c, s, precision, cb), steps, device)
    dec = seconds_per_step(lambda s, cb: ddim.ddim_decode(model, x, c, s, precision, cb), steps, device)
    return enc, dec


def run(args) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for config in args.configs:
        model, size, cond_dim = build(config, device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for precision in args.precisions:
            for batch in args.batches:
                try:
                    enc, dec = measure(model, size, cond_dim, batch, precision, args.measure_steps, device)
                except RuntimeError as exc:  # e.g. bf16 autocast unsupported on this CPU
                    print(f"# {config} {precision} batch {batch}: skipped ({exc})")
                    continue
                rows.append(dict(config=config, size=size, params=params, precision=precision, batch=batch,
                                 enc_pps=batch / enc, dec_pps=batch / dec))
    return rows


def table(rows: list[dict], steps: int, device: str) -> str:
    ref_rate = {r["config"]: r["dec_pps"] for r in rows
                if r["precision"] == "fp32" and r["batch"] == REFERENCE_BATCH}
    head = (f"| config | params | precision | batch | enc passes/s | dec passes/s | "
            f"first edit s/frame (enc+dec @{steps}) | further edit s/frame (dec @{steps}) | "
            f"ref s/frame (fp32, b4, 3x1000) |")
    lines = [f"device: {device}; torch {torch.__version__}; threads {torch.get_num_threads()}", "", head,
             "|" + "---|" * 9]
    for r in rows:
        ref = ref_rate.get(r["config"])
        ref_s = f"{REFERENCE_PASSES / ref:.3g}" if ref else "n/a"
        lines.append(
            f"| {r['config']} {r['size']}² | {r['params']:.1f} M | {r['precision']} | {r['batch']} | "
            f"{r['enc_pps']:.3g} | {r['dec_pps']:.3g} | {steps / r['enc_pps'] + steps / r['dec_pps']:.3g} | "
            f"{steps / r['dec_pps']:.3g} | {ref_s} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="small", type=lambda s: s.split(","), help="small,full")
    parser.add_argument("--precisions", default="fp32,bf16", type=lambda s: s.split(","))
    parser.add_argument("--batches", default="1,4,8", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--steps", type=int, default=ddim.DEFAULT_STEPS, help="DDIM steps the s/frame columns assume")
    parser.add_argument("--measure-steps", type=int, default=3, help="timed DDIM steps per cell (after 1 warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(table(run(args), args.steps, args.device))


if __name__ == "__main__":
    main()
