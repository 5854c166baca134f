"""Validation of a weight set on real clips: reconstruction and an attribute edit, scored.

    python benchmarks/default_model.py                                   # the default set
    python benchmarks/default_model.py --weights default --compare ./default-s3 --frames 75
    python benchmarks/default_model.py --clips ../shared/clips/talk_man_short_2s.mp4 --steps 50
    python benchmarks/default_model.py --frames 20 --steps 20 50 100 --sampler s3edit dva
    python benchmarks/default_model.py --frames 10 --steps 10 20 --fixed-point 0 1 2 3

For each clip (default: two shared clips of people without glasses), each weight set
(``--weights``, then every ``--compare``), each DDIM sampler (``--sampler``; default the
set's own, docs/sampler.md), each step count (``--steps``) and each number of fixed-point
corrections per encode step (``--fixed-point``, s3edit's sampler), on the clip's first
``--frames`` frames:

1. ``align`` at the set's resolution (a job per clip and set);
2. ``edit`` at scale 0 (encode + decode: the reconstruction) and ``score`` it:
   PSNR inside the face region, ID-Preserve, and NAPR: the share of frames whose other
   heads keep their verdict through encode and decode alone (a face near a head's
   boundary flips it without any edit): the edit's NAPR is read against it;
3. ``edit --attr ATTR --scale S [--region R]`` and ``score`` it: ID-Preserve, TL-ID, TG-ID, TACR
   (share of frames whose ATTR head moved to the target: for Eyeglasses, the share of
   frames where the glasses head flips), NAPR, PSNR in the face, "warp x" (the face's
   warp error in the edit over the source's: above 1, the edit flickers); plus a contact sheet
   (``score --sheet``: the face in six frames, original above edit) in ``--out``.

TACR/NAPR use the FIRST set's heads for every row, so all rows are judged alike. The
identity net of the metrics is ``--id-net`` (dlib's 128-d ResNet by default). One job per
clip and set: each sampler and step count encodes it again (x_T; the semantics are
kept). Each row gives the network passes per frame of its encode and of its decodes. The load average before and after is printed with the table. The same
figures come from the commands (per clip): ``s3edit edit CLIP --attr Eyeglasses --scale 0``
then ``s3edit score CLIP.s3job CLIP_recon.mp4``, and ``s3edit edit CLIP --attr Eyeglasses
--scale 0.6`` then ``s3edit score CLIP.s3job CLIP_Eyeglasses+0.6.mp4 --sheet sheet.png``
(whole clips; this script takes the first frames to bound the CPU time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIPS = ROOT.parent / "shared" / "clips"
DEFAULT_CLIPS = ("talk_man_short_2s.mp4", "woman_headturn_expressions_05.mp4")
COLUMNS = ("enc_passes", "dec_passes", "psnr_recon", "id_recon", "napr_recon", "id_preserve", "tl_id", "tg_id",
           "tacr", "napr", "psnr_face", "warp_ratio", "seconds")
HEADERS = ("enc pass", "dec pass", "PSNR rec", "ID rec", "NAPR rec", "ID-Pres", "TL-ID", "TG-ID", "TACR", "NAPR",
           "PSNR edit", "warp x", "seconds")


def validate(clip: Path, weights: Path, judge, job, args, out: Path, sampler: str | None = None,
             steps: int = 100, fixed_point: int = 0) -> dict[str, float]:
    """Reconstruction and edit of one clip with one set, sampler, step count and
    fixed-point corrections -> the row's figures."""
    from s3edit.model import ddim
    from s3edit.pipeline.edit import CONFINED_EDIT_START, edit_job
    from s3edit.pipeline.options import run_options
    from s3edit.pipeline.paste import PasteConfig, paste_video
    from s3edit.pipeline.score import AttributeTarget, score

    started = time.perf_counter()
    row: dict[str, float] = {}
    run = run_options(weights, steps=steps, batch_size=args.batch_size, sampler=sampler, fixed_point=fixed_point)
    tag = f"{clip.stem}__{weights.name}__{run.sampler.value}" + (f"__fp{fixed_point}" if fixed_point else "")
    row["enc_passes"] = ddim.encode_passes(steps, run.sampler.value, fixed_point)
    row["dec_passes"] = steps if args.region == "whole" else ddim.region_passes(steps, CONFINED_EDIT_START)
    recon = edit_job(job, [(args.attr, 0.0)], run)
    video = paste_video(job, out / f"{tag}_recon.mp4",
                        PasteConfig(edit=recon.name, overwrite=True, max_frames=args.frames)).output
    target = AttributeTarget(judge, args.attr, 1 if args.scale >= 0 else -1)
    report = score(job.root, video, id_net=args.id_net, attr=target)
    row["psnr_recon"], row["id_recon"], row["napr_recon"] = report.psnr_face, report.id_preserve, report.napr
    edit = edit_job(job, [(args.attr, args.scale)], run, region=args.region)
    video = paste_video(job, out / f"{tag}_{edit.name}.mp4",
                        PasteConfig(edit=edit.name, overwrite=True, max_frames=args.frames)).output
    report = score(job.root, video, id_net=args.id_net, attr=target, sheet=out / f"{tag}_{edit.name}_sheet.png")
    for key in ("id_preserve", "tl_id", "tg_id", "tacr", "napr", "psnr_face"):
        row[key] = getattr(report, key)
    row["warp_ratio"] = report.warp_edited_face / report.warp_source_face  # flicker: 1 = as steady as the source
    row["seconds"] = time.perf_counter() - started
    return row


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.4f}" if abs(value) < 2 else f"{value:.2f}"


def print_table(results: dict[str, dict[str, dict[str, float]]], args, load: str = "") -> None:
    print(f"\n{args.attr} {args.scale:+g}, region {args.region}, first {args.frames} frames, id net "
          f"{args.id_net}; PSNR in dB inside the face region; T = DDIM steps{load}")
    print(f"{'clip':<36} {'weights':<16} {'sampler':<7} {'T':>4} {'K':>2} " + " ".join(f"{h:>9}" for h in HEADERS))
    for clip, rows in results.items():
        for key, row in rows.items():
            name, sampler, steps, fixed = key.split("|")
            print(f"{clip:<36} {name:<16} {sampler:<7} {steps:>4} {fixed:>2} "
                  + " ".join(f"{fmt(row.get(c)):>9}" for c in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, nargs="+", default=None,
                        help=f"videos (default: {', '.join(DEFAULT_CLIPS)} from ../shared/clips)")
    parser.add_argument("--weights", default=None, help="weight set (default: the registry's default)")
    parser.add_argument("--compare", action="append", default=[], help="more weight sets, one row each")
    parser.add_argument("--attr", default="Eyeglasses")
    parser.add_argument("--scale", type=float, default=0.6)
    parser.add_argument("--steps", type=int, nargs="+", default=[100], help="DDIM steps of encode and decode; "
                        "with --fixed-point 0 (the defaults here) the figures the model card and TRAINING.md record, "
                        "`--steps 20 --fixed-point 2` is what `s3edit edit` runs by default "
                        "(several: a row each)")
    parser.add_argument("--fixed-point", type=int, nargs="+", default=[0],
                        help="fixed-point corrections per encode step (several: a row each)")
    parser.add_argument("--sampler", nargs="+", choices=("s3edit", "dva"), default=[None],
                        help="DDIM sampler(s), a row each (default: each set's own)")
    parser.add_argument("--region", default="auto", help="edit --region: auto (an attribute's region) or whole")
    parser.add_argument("--frames", type=int, default=75, help="only the first N frames of each clip")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--id-net", default="dlib-cpp", help="identity net of the metrics")
    parser.add_argument("--out", type=Path, default=Path("default-model-validation"),
                        help="jobs, videos and contact sheets go here")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    from s3edit.weights.registry import resolve_weights
    from s3edit.pipeline.align import align_video
    from s3edit.pipeline.options import pick_device
    from s3edit.pipeline.score_nets import WeightSetFaces
    from s3edit.weights.load import load_weights

    clips = args.clips or [SHARED_CLIPS / name for name in DEFAULT_CLIPS]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)} (the defaults need ../shared/clips)")
    sets = [resolve_weights(args.weights)] + [resolve_weights(w) for w in args.compare]
    judge = WeightSetFaces(load_weights(sets[0], pick_device("auto")))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    load_before = os.getloadavg()
    for clip in clips:
        for weights in sets:
            size = load_weights(weights, pick_device("auto")).size
            # one job per set: edits of the same name by two sets must not meet
            job = align_video(clip, args.out / f"{clip.stem}__{weights.name}.s3job", size=size,
                              max_frames=args.frames)
            for sampler in args.sampler:
                for steps in args.steps:
                    for fixed in args.fixed_point:
                        print(f"[{clip.name}] {weights.name} {sampler or 'default sampler'} T={steps} K={fixed} ...",
                              flush=True)
                        row = validate(clip, weights, judge, job, args, args.out, sampler, steps, fixed)
                        used = job.stage("encode")["params"]["sampler"]
                        results.setdefault(clip.name, {})[f"{weights.name}|{used}|{steps}|{fixed}"] = row
    load = "; load average (1, 5, 15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg())
    print_table(results, args, load)
    print(f"contact sheets: {args.out}/*_sheet.png")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
