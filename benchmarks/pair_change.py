"""How alike are the changes of an edit-pairs file? What one shared edit could learn from them.

    python benchmarks/pair_change.py DATA/smiling-job-pairs.json
    python benchmarks/pair_change.py DATA/classic-glasses-job-pairs.json --picture change.png

An edit is one move of the code, the same for every face, so what a decoder can learn
from pairs (``s3edit tune --pairs``) is what their changes share. For the pairs' crops at
``--size`` (the model's image size), over the pixels that change (|tgt - src| above two
grey levels in any channel) in more than half of the pairs, in % of the pixel range:

- per pair: the mean |tgt - src|, how much each pair changes;
- |mean|: the absolute per-pixel mean of the changes, what an L2 paired term learns;
- |median|: the absolute per-pixel median, what an L1 paired term learns.

Drawn twins (the classic glasses) change every face alike: |mean| and |median| are close
to the per-pair figure. Real pairs (a sitter neutral and smiling) vary: what they share
is the smaller part. Then the landmarks: per facial part that moves, the mean
displacement from source to target in pixels of the crop (x right, y down) and its
spread over the pairs, and the mouth's width (corner to corner) and inner opening before
and after; and the corners' moves and the opening in units of the eye distance, the
quartiles over pairs (what the classic smile, ``s3edit.portraits.smiling``, is sized on).
``--picture``: the source crops' mean, the mean change and the median change (grey = no
change, contrast x ``--gain``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from s3edit.face import landmarks as lm68

PARTS = {"jaw": lm68.JAW, "brows": lm68.BROWS, "nose": lm68.NOSE, "eyes": lm68.EYES, "mouth": lm68.MOUTH,
         "corner 48": [lm68.MOUTH_RIGHT_CORNER], "corner 54": [lm68.MOUTH_LEFT_CORNER]}  # 48: image left, 54: right
LIP_INNER_TOP, LIP_INNER_BOTTOM = 62, 66  # the inner lips' middle points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="an edit-pairs file (scripts/glasses_job.py, scripts/smiling_job.py)")
    parser.add_argument("--size", type=int, default=64, help="crop size (the model's image size)")
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--gain", type=float, default=4.0, help="contrast of the change pictures")
    args = parser.parse_args()

    import cv2

    from s3edit.job import Job
    from s3edit.train.data import load_jobs
    from s3edit.train.objective import PAIR_CHANGED
    from s3edit.train.pairs import read_pairs, resolve_pairs

    pairs = read_pairs(args.pairs)
    jobs = [Job.open(pairs.without), Job.open(pairs.with_)]
    data = load_jobs(jobs, args.size)
    rows = resolve_pairs(pairs, [j.root for j in jobs], [j.aligned_frames().indices for j in jobs])
    x0, target = data.crops[rows[:, 0]].float(), data.crops[rows[:, 1]].float()
    change = target - x0  # (M, 3, S, S), [-1, 1] units
    changed = (change.abs().amax(1) > PAIR_CHANGED).float().mean(0) > 0.5  # (S, S)
    n = int(changed.sum())
    print(f"{args.pairs.name}: {len(change)} pairs ({pairs.attribute}) at {args.size} px; "
          f"{n} pixels change in more than half of them")
    if n:
        figures = {"per pair": change.abs().mean(0), "|mean|": change.mean(0).abs(),
                   "|median|": change.median(0).values.abs()}
        print("  mean over those pixels, % of the pixel range: " + ", ".join(
            f"{k} {float(v[:, changed].mean()) * 50:.2f}" for k, v in figures.items()))

    lnd_src = data.landmarks[rows[:, 0]].double().numpy()
    lnd_tgt = data.landmarks[rows[:, 1]].double().numpy()
    move = lnd_tgt - lnd_src  # (M, 68, 2) px
    print("  landmarks, source -> target, px of the crop (x right, y down): mean displacement (spread over pairs)")
    for name, part in PARTS.items():
        d = move[:, list(part)]
        mean, spread = d.mean((0, 1)), d.mean(1).std(0)
        size = float(np.linalg.norm(d, axis=-1).mean())
        if size < 0.005:
            continue
        print(f"    {name:14s} x {mean[0]:+.2f} ({spread[0]:.2f})  y {mean[1]:+.2f} ({spread[1]:.2f})  |d| {size:.2f}")
    width = [float(np.linalg.norm(lm[:, lm68.MOUTH_LEFT_CORNER] - lm[:, lm68.MOUTH_RIGHT_CORNER], axis=-1).mean())
             for lm in (lnd_src, lnd_tgt)]
    opening = [float((lm[:, LIP_INNER_BOTTOM, 1] - lm[:, LIP_INNER_TOP, 1]).mean()) for lm in (lnd_src, lnd_tgt)]
    print(f"  mouth width {width[0]:.2f} -> {width[1]:.2f} px, inner opening {opening[0]:.2f} -> {opening[1]:.2f} px")
    print("  the mouth in each source face's frame, units of its eye distance d (glasses.face_frame), "
          "quartiles over pairs 25/50/75 %:")
    for name, values in mouth_in_face_units(lnd_src, lnd_tgt).items():
        q = np.percentile(values, [25, 50, 75])
        print(f"    {name:22s} {q[0]:+.3f} / {q[1]:+.3f} / {q[2]:+.3f}")

    if args.picture is not None:
        grey = [x0.mean(0), args.gain * change.mean(0), args.gain * change.median(0).values]
        tiles = torch.stack(grey).clamp(-1, 1).add(1).mul(127.5).byte().permute(0, 2, 3, 1).numpy()
        cv2.imwrite(str(args.picture), cv2.cvtColor(np.concatenate(list(tiles), axis=1), cv2.COLOR_RGB2BGR))
        print(f"wrote {args.picture} (source mean, mean change, median change; x{args.gain:g})")


def mouth_in_face_units(lnd_src: np.ndarray, lnd_tgt: np.ndarray) -> dict[str, np.ndarray]:
    """Per pair, in the source face's frame (units of its eye distance): the corners'
    move out and up (mean of the two), the inner opening before and after; the figures
    ``s3edit.portraits.smiling.SmileStyle`` is sized in."""
    from s3edit.portraits.glasses import face_frame

    rows = []
    for src, tgt in zip(lnd_src, lnd_tgt):
        frame = face_frame(src)
        a, b = frame.to_face(src), frame.to_face(tgt)
        move = b - a
        left, right = lm68.MOUTH_RIGHT_CORNER, lm68.MOUTH_LEFT_CORNER  # image left, image right
        rows.append(((move[right, 0] - move[left, 0]) / 2, -(move[left, 1] + move[right, 1]) / 2,
                     a[LIP_INNER_BOTTOM, 1] - a[LIP_INNER_TOP, 1], b[LIP_INNER_BOTTOM, 1] - b[LIP_INNER_TOP, 1]))
    values = np.array(rows).reshape(-1, 4)
    return {"corners out": values[:, 0], "corners up": values[:, 1],
            "inner opening before": values[:, 2], "inner opening after": values[:, 3]}


if __name__ == "__main__":
    main()
