"""At which timesteps does a weight set's decoder listen to its codes? One-step predictions
of edit pairs under the plain, the edited and other faces' codes.

    python benchmarks/code_response.py DATA/smiling-job-pairs.json --weights W --frames 8
    python benchmarks/code_response.py DATA/classic-glasses-job-pairs.json --scale 0.6 --picture r.png

An edit can only change what the network's prediction depends on. For the first
``--frames`` pairs of a pairs file (``s3edit tune --pairs``; the pair's attribute is the
edit's) past its first ``--skip``, each source crop is noised to x_t at each ``--t``
(one fixed noise) and the one-step prediction
x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t) is taken under:

- the crop's own codes (z_id, z_lnd): the plain prediction;
- the next crop's z_id, or the next crop's z_lnd (the other codes its own): how much
  the prediction at t depends on the identity code, and on the landmark code;
- the own z_id edited by DVA's rule along the attribute by ``--scale``: what the edit
  changes at t;
- the own z_id with the target's z_lnd (its landmarks; a smile pair's target carries
  the smiling mouth's): whether the decoder would draw the change from the landmark
  code instead.

Printed per t, as mean absolute differences in % of the pixel range: the other codes'
change over the whole crop, the edit's change inside the attribute's region
(``s3edit.face.mask.attribute_region``; the eye band for Eyeglasses), and inside it
the plain and the edited prediction's distance to the pair's target against the
source's own distance to it (an edit the decoder learnt brings the edited prediction
closer to the target than the plain one); last, the same two figures for the target's
landmark code. ``--picture``: per t, rows source, target, plain, edited.

First, where the codes enter the network: how far the edit moves the fused code
z_face = fuse(z_id, z_lnd) against how far another crop's z_id moves it (mean Euclidean
distances). The fusion layer learns which directions of z_id matter: an edit the decoder
has learnt moves z_face more than a change of sitter does.

For a set with S3Editor's cluster transforms (``s3edit tune``), the edit as ``edit``
makes it, z_face' = fuse(z_id', z_lnd) + T_k(z_id', z_lnd) with k the attribute's
cluster, is one more code: printed are how far T_k moves z_face beyond the plain edit
and, per t, how much that move changes the prediction inside the region ("T_k,
region"): whether the decoder responds to what the transforms add.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="an edit-pairs file (scripts/glasses_job.py, scripts/smiling_job.py)")
    parser.add_argument("--weights", default=None, help="weight set (default: the registry's default)")
    parser.add_argument("--frames", type=int, default=8, help="the first N pairs (after --skip)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first K pairs (e.g. those a probe trained on: check others)")
    parser.add_argument("--scale", type=float, default=0.6, help="edit scale (DVA's rule)")
    parser.add_argument("--t", type=int, nargs="+", default=[200, 500, 800, 950], help="timesteps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, default=None)
    args = parser.parse_args()

    import cv2

    from s3edit.face.mask import attribute_region, eye_band
    from s3edit.job import Job
    from s3edit.model.attributes import edit_direction, edit_identity
    from s3edit.s3.routing import face_code
    from s3edit.s3.selftrain import load_s3
    from s3edit.train.data import load_jobs
    from s3edit.train.objective import alphas_cumprod, noisy, predict_x0
    from s3edit.train.pairs import read_pairs, resolve_pairs
    from s3edit.weights.registry import resolve_weights
    from s3edit.weights.weightset import load_weight_set

    ws = load_weight_set(resolve_weights(args.weights))
    model, size, cls = ws.model.eval(), ws.config.image_size, ws.classifier
    pairs = read_pairs(args.pairs)
    if cls is None or pairs.attribute not in cls.names:
        raise SystemExit(f"the weight set has no {pairs.attribute} head to edit along")
    jobs = [Job.open(pairs.without), Job.open(pairs.with_)]
    data = load_jobs(jobs, size)
    rows = resolve_pairs(pairs, [j.root for j in jobs], [j.aligned_frames().indices for j in jobs])
    rows = rows[args.skip:args.skip + args.frames]
    if not len(rows):
        raise SystemExit(f"{args.pairs} has {len(pairs.frames)} pairs: none past --skip {args.skip}")
    x0, target = data.crops[rows[:, 0]], data.crops[rows[:, 1]]
    lnd = data.landmarks[rows[:, 0]]
    lnd01 = (lnd + 0.5) / size
    target_lnd01 = (data.landmarks[rows[:, 1]] + 0.5) / size
    region = attribute_region(pairs.attribute, lnd, size)
    region = torch.from_numpy(eye_band(lnd.numpy(), size)) if region is None else region
    region = region[:, None].float().expand_as(x0)
    w = cls.weight.float()
    direction = edit_direction(w[cls.names.index(pairs.attribute)])
    abar = alphas_cumprod()
    gen = torch.Generator().manual_seed(args.seed)
    n = len(rows)

    def pct(diff: torch.Tensor, where: torch.Tensor | None = None) -> float:  # [-1, 1] units -> % of range
        where = torch.ones_like(diff) if where is None else where
        return float((diff.abs() * where).sum() / where.sum()) * 50

    with torch.no_grad():
        z_id, z_lnd = model.z_id(x0, lnd01), model.z_lnd(x0, lnd01)
        edited = edit_identity(z_id, direction, args.scale, cls.conds_mean.float(), cls.conds_std.float())
        codes = {"plain": model.fuse(z_id, z_lnd), "other z_id": model.fuse(z_id.roll(1, 0), z_lnd),
                 "other z_lnd": model.fuse(z_id, z_lnd.roll(1, 0)), "edited": model.fuse(edited, z_lnd),
                 "target z_lnd": model.fuse(z_id, model.z_lnd(x0, target_lnd01))}
        s3 = load_s3(ws)
        if s3 is not None:
            k = s3.clusters.route_name(pairs.attribute)
            codes["routed"] = face_code(model.fuse, s3.transforms.float().eval(), edited, z_lnd, k)
        print(f"{ws.name or args.weights}: pairs {args.skip + 1}-{args.skip + n} of {args.pairs.name} "
              f"({pairs.attribute}, scale {args.scale:+g})")

        def moved(key: str) -> float:
            return float((codes[key] - codes["plain"]).norm(dim=1).mean())

        print(f"z_face moved by the edit {moved('edited'):.3f}, by the target's z_lnd {moved('target z_lnd'):.3f}, "
              f"by another crop's z_id {moved('other z_id'):.3f}, by another crop's z_lnd {moved('other z_lnd'):.3f}; "
              "one-step predictions, mean |difference| in % of the pixel range:")
        if s3 is not None:
            through = float((codes["routed"] - codes["edited"]).norm(dim=1).mean())
            print(f"T_{k} (the cluster of {pairs.attribute}) moves the edited z_face by a further {through:.3f} "
                  f"(|z_face| {float(codes['plain'].norm(dim=1).mean()):.3f})")
        print(f"{'t':>5} {'other z_id':>11} {'other z_lnd':>12} {'edit, region':>13} "
              f"{'plain-target':>13} {'edited-target':>14} {'source-target':>14} "
              f"{'lnd, region':>12} {'lnd-target':>11}" + (f" {'T_k, region':>12}" if s3 is not None else ""))
        rows = []
        for t in args.t:
            a = abar[t].view(1, 1, 1, 1)
            x_t = noisy(x0, torch.randn(x0.shape, generator=gen), a)
            steps = torch.full((n,), t)
            pred = {k: predict_x0(x_t, model(x_t, steps, z), a) for k, z in codes.items()}
            print(f"{t:>5} {pct(pred['other z_id'] - pred['plain']):>11.2f} "
                  f"{pct(pred['other z_lnd'] - pred['plain']):>12.2f} "
                  f"{pct(pred['edited'] - pred['plain'], region):>13.2f} "
                  f"{pct(pred['plain'] - target, region):>13.2f} {pct(pred['edited'] - target, region):>14.2f} "
                  f"{pct(x0 - target, region):>14.2f} "
                  f"{pct(pred['target z_lnd'] - pred['plain'], region):>12.2f} "
                  f"{pct(pred['target z_lnd'] - target, region):>11.2f}"
                  + (f" {pct(pred['routed'] - pred['edited'], region):>12.2f}" if s3 is not None else ""))
            rows += [x0, target, pred["plain"], pred["edited"]]
    if args.picture is not None:
        grid = torch.cat(rows).clamp(-1, 1).add(1).mul(127.5).byte().permute(0, 2, 3, 1).numpy()
        lines = [np.concatenate(list(grid[r * n:(r + 1) * n]), axis=1) for r in range(len(rows))]
        cv2.imwrite(str(args.picture), cv2.cvtColor(np.concatenate(lines), cv2.COLOR_RGB2BGR))
        print(f"wrote {args.picture} (per t, rows: source, target, plain, edited)")


if __name__ == "__main__":
    main()
