"""What a confined edit keeps outside its region, three ways, on an encoded job.

    python benchmarks/confined_edit.py clip.s3job --steps 20 --frames 8 --picture cmp.png

An edit confined to a region (``edit --region auto``) blends, after every DDIM step, the
edited sample with a sample that stands for the original frame outside the region. Three
such backgrounds, for the same x_T, edited code and region (decoding from t < 700):

- ``decode``: the plain decode of x_T under the frame's own code, run beside the edit
  in one batch (2 trajectories; the change is edited - plain decode);
- ``encode``: the encode's own trajectory, x_t of the inversion at each level (no
  extra decode passes, but one stored sample per frame and step);
- ``path`` (what ``edit`` runs, ``ddim.ddim_decode_in_region``): x0 noised with its
  own inversion noise (no extra passes, nothing stored).

For each it prints the network passes per frame of the edit and, inside the region, the change's size and
how far each change is from the ``decode`` one (PSNR over the [-1, 1] range), plus the
load average. ``--picture``: rows = source, source + each change.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from s3edit.job import Job
from s3edit.model import ddim
from s3edit.model.frames import to_model
from s3edit.pipeline import encode as enc
from s3edit.pipeline.edit import CONFINED_EDIT_START, edited_identity, face_codes, region_of
from s3edit.pipeline.options import run_options


def blend_with(background, eps_model, x_T, cond, region, steps, start):
    """Decode x_T under ``cond`` from the first step with t < ``start``, taking
    ``background(level)`` outside ``region`` after every step (level -1: clean)."""
    scheduler = ddim.decode_scheduler(steps)
    x = None
    for t in scheduler.timesteps.tolist():
        if t >= start:
            continue
        x = background(t) if x is None else x
        x = scheduler.step(ddim._eps(eps_model, x, t, cond, "fp32"), t, x, eta=0.0).prev_sample
        b = background(t - ddim.NUM_TRAIN_TIMESTEPS // steps)
        x = b + region * (x - b)
    return x


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path, help="an aligned job (encoded here at --steps if it is not)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--attr", default="Eyeglasses")
    parser.add_argument("--scale", type=float, default=0.6)
    parser.add_argument("--picture", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    job = Job.open(args.job)
    run = run_options(None, steps=args.steps, job=job, device="cpu", precision="fp32")
    latents = enc.encode_job(job, run)
    frames = job.aligned_frames()
    idx, x_T = next(enc.iter_x_T(latents))
    idx, x_T = idx[:args.frames], x_T[:args.frames]
    rows = latents.rows(idx)
    model, size, steps = run.weights.model, run.weights.size, args.steps
    x0 = to_model(job.read_crops(idx.numpy()), size)
    attrs = [(args.attr, args.scale)]
    cond = face_codes(model, edited_identity(latents.z_id_rep, attrs, run.weights.ws.classifier),
                      latents.z_lnd[rows], None, None)
    plain = latents.z_face[rows]
    region = region_of(attrs, frames, idx, size)
    start = CONFINED_EDIT_START
    results = {}

    # decode: the plain trajectory recomputed beside the edit
    scheduler, plain_x, states = ddim.decode_scheduler(steps), x_T, {}
    for t in scheduler.timesteps.tolist():  # the sample at each level below the top
        plain_x = scheduler.step(ddim._eps(model, plain_x, t, plain, "fp32"), t, plain_x, eta=0.0).prev_sample
        states[t - ddim.NUM_TRAIN_TIMESTEPS // steps] = plain_x
    out = blend_with(lambda level: states.get(level, x_T), model, x_T, cond, region, steps, start)
    results["decode"] = (out - plain_x, steps + ddim.region_passes(steps, start))

    inverse, x, trajectory = ddim.encode_scheduler(steps), x0, {}  # encode: the inversion's samples,
    for t in inverse.timesteps.tolist():  # made by the encode stage itself (not timed here)
        x = inverse.step(ddim._eps(model, x, t, plain, "fp32"), t, x).prev_sample
        trajectory[t] = x
    out = blend_with(lambda level: x0 if level < 0 else trajectory[level], model, x_T, cond, region, steps, start)
    results["encode"] = (out - x0, ddim.region_passes(steps, start))

    # path: the tool's
    out = ddim.ddim_decode_in_region(model, x_T, x0, cond, region, steps, edit_start=start)
    results["path"] = (out - x0, ddim.region_passes(steps, start))

    inside = region.expand_as(x0) > 0.5
    ref = results["decode"][0]
    print(f"{job.root.name}: {len(idx)} frames, {steps} steps, {args.attr} {args.scale:+g}, edit from t < {start}; "
          f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print(f"{'background':>10} {'passes/frame':>13} {'change rms':>11} {'PSNR vs decode':>15}")
    for name, (change, passes) in results.items():
        rms = change[inside].pow(2).mean().sqrt().item()
        diff = (change - ref)[inside].pow(2).mean().sqrt().item()
        psnr = "-" if name == "decode" else f"{20 * np.log10(2 / max(diff, 1e-12)):.1f} dB"
        print(f"{name:>10} {passes:>13} {rms:>11.4f} {psnr:>15}")
    if args.picture:
        from PIL import Image

        tiles = [x0] + [(x0 + change).clamp(-1, 1) for change, _ in results.values()]
        grid = torch.cat([torch.cat(list(t), 2) for t in tiles], 1)
        Image.fromarray(((grid + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(args.picture)
        print(f"picture: {args.picture} (rows: source, then source + the change with each background)")


if __name__ == "__main__":
    main()
