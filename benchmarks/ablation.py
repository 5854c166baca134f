"""S3Editor's ablations on your footage: tune one weight set per configuration, edit the
clip with each, score each edit, print tables shaped like the paper's.

    python benchmarks/ablation.py --weights dva --attr Eyeglasses          # GPU, real model
    python benchmarks/ablation.py --quick                                  # CPU smoke run
    python benchmarks/ablation.py --clip my.mp4 --weights my-set --steps 500 --json out.json
    python benchmarks/ablation.py --clip my.mp4 --weights my-set --only components --rows baseline,+ST+SDA+SL

Tables (every row is ``s3edit tune`` with these switches, then ``edit`` + ``score``):

1. components: baseline (DVA's loss only: --no-self-train --no-routing --sparsity 0),
   +ST (self-training, K = 1, q = 0), +ST+SDA (routing, K = 5, q = 0), +ST+SDA+SL
   (K = 5, q = 0.1: S3Editor);
2. clusters K ∈ {2, 3, 5, 10} (self-training, q = 0.1);
3. sparsity q ∈ {0, 0.1, 0.3, 0.5} (self-training, K = 5);
4. leave-one-out: S3Editor, and S3Editor with each of tune's switches --no-self-train,
   --no-routing, --sparsity 0.
Identical configurations run once, and so do configurations that train the same
weights: sparsity zeroes Q = ⌊q·7K⌋ landmark groups, so with Q = 0 (e.g. --no-routing
at q = 0.1: ⌊0.7⌋ = 0) a row is its q = 0 twin (DHSPG then runs Adam bit for bit); and
without self-training the T_k stay 0 whatever K and q, so --no-self-train is the
baseline (docs/s3editor.md, Ablation switches). Columns: TL-ID, TG-ID, ID-Preserve, TACR, NAPR
(``s3edit.pipeline.score``). The identity net of the metrics is ``--id-net`` (dlib's by
default); TACR/NAPR use the STARTING weight set's attribute heads for every row, so all
rows are judged alike.

``--quick``: 8 frames, 6 tune steps, 5 DDIM steps; without ``--weights`` it builds a
tiny random model (tiny-32, dlib identity net, random attribute heads): that checks the
machinery end to end in minutes on a CPU, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from s3edit.s3.dhspg import num_sparse_groups
from s3edit.s3.groups import FACE_REGIONS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CLIP = ROOT / "examples" / "astronaut.mp4"
COLUMNS = ("tl_id", "tg_id", "id_preserve", "tacr", "napr")
HEADERS = ("TL-ID", "TG-ID", "ID-Preserve", "TACR", "NAPR")
PAPER = {  # S3Editor's paper (Wang et al., 2024), VoxCeleb 256²; docs/metrics.md
    "DVA (paper)": (0.9941, 0.9923, 0.9169, 0.046, 0.9460),
    "S3Editor (paper)": (0.9986, 0.9972, 0.9456, 0.066, 0.9561),
}


@dataclass(frozen=True)
class Row:
    """One tune configuration."""

    self_train: bool
    routing: bool
    clusters: int
    sparsity: float

    @property
    def key(self) -> str:
        """Names the weights the configuration trains: K = 1 without routing, q = 0 when
        it zeroes no group, both without self-training (module docstring)."""
        if not self.self_train:
            return "st0_k1_q0"
        k = self.clusters if self.routing else 1
        q = self.sparsity if num_sparse_groups(self.sparsity, len(FACE_REGIONS) * k) > 0 else 0.0
        return f"st1_k{k}_q{q:g}"


def tables() -> dict[str, list[tuple[str, Row]]]:
    """The paper's three ablations (module docstring)."""
    return {
        "components": [
            ("baseline", Row(False, False, 1, 0.0)),
            ("+ST", Row(True, False, 1, 0.0)),
            ("+ST+SDA", Row(True, True, 5, 0.0)),
            ("+ST+SDA+SL", Row(True, True, 5, 0.1)),
        ],
        "clusters": [(f"K={k}", Row(True, True, k, 0.1)) for k in (2, 3, 5, 10)],
        "sparsity": [(f"q={q:g}", Row(True, True, 5, q)) for q in (0.0, 0.1, 0.3, 0.5)],
        "leave-one-out": [
            ("S3Editor", Row(True, True, 5, 0.1)),
            ("--no-self-train", Row(False, True, 5, 0.1)),
            ("--no-routing", Row(True, False, 5, 0.1)),
            ("--sparsity 0", Row(True, True, 5, 0.0)),
        ],
    }


def tiny_random_weights(folder: Path) -> Path:
    """--quick without --weights: tiny-32 with dlib's identity net, random heads."""
    from s3edit.weights.weightset import random_weight_set

    return random_weight_set(folder, "tiny-32-dlib", overwrite=True)


def run_row(row: Row, args, job, weights: Path, judge, work: Path) -> dict[str, float]:
    """tune -> edit -> paste -> score for one configuration."""
    from s3edit.train.loop import TrainConfig
    from s3edit.pipeline.edit import edit_job
    from s3edit.pipeline.options import run_options
    from s3edit.pipeline.paste import PasteConfig, paste_video
    from s3edit.pipeline.score import AttributeTarget, score
    from s3edit.pipeline.tune import tune
    from s3edit.s3.selftrain import S3Config

    tuned = work / row.key
    s3 = S3Config(self_train=row.self_train, routing=row.routing, clusters=row.clusters, sparsity=row.sparsity)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    started = time.perf_counter()
    tune([job.root], tuned, base=str(weights), cfg=cfg, s3=s3, overwrite=True)
    result = edit_job(job, [(args.attr, args.scale)],
                      run_options(tuned, steps=args.decode_steps, batch_size=args.batch_size))
    video = paste_video(job, work / f"{row.key}.mp4",
                        PasteConfig(edit=result.name, overwrite=True, max_frames=args.frames)).output
    target = AttributeTarget(judge, args.attr, 1 if args.scale >= 0 else -1)
    report = score(job.root, video, id_net=args.id_net, attr=target)
    values = {c: getattr(report, c) for c in COLUMNS}
    values["seconds"] = time.perf_counter() - started
    return values


def fmt(value) -> str:
    return "     -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def print_tables(results: dict[str, dict[str, float]]) -> None:
    width = 18
    head = f"{'':<{width}}" + "".join(f"{h:>13}" for h in HEADERS)
    for title, rows in tables().items():
        print(f"\n{title}\n{head}")
        for label, row in rows:
            values = results.get(row.key, {})
            print(f"{label:<{width}}" + "".join(f"{fmt(values.get(c)):>13}" for c in COLUMNS))
    print(f"\npaper (VoxCeleb, 256 px)\n{head}")
    for label, values in PAPER.items():
        print(f"{label:<{width}}" + "".join(f"{v:>13.4f}" for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=EXAMPLE_CLIP)
    parser.add_argument("--weights", help="starting weight set (name or folder, with attribute heads)")
    parser.add_argument("--attr", default="Eyeglasses")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=500, help="tune steps per configuration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-steps", type=int, default=50, help="DDIM steps of encode/edit")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--id-net", default="dlib-cpp", help="identity net of the metrics")
    parser.add_argument("--work", type=Path, default=None, help="keep tuned sets, jobs and videos here")
    parser.add_argument("--only", choices=list(tables()), help="run one table only")
    parser.add_argument("--rows", type=lambda s: s.split(","), default=None,
                        help="only these rows of the tables, by label (e.g. baseline,+ST+SDA+SL)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run (module docstring)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.steps, args.decode_steps, args.batch_size = args.frames or 8, 6, 5, 2
        args.lr = 2e-3
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    work = args.work or Path(tempfile.mkdtemp(prefix="s3edit-ablation-"))
    work.mkdir(parents=True, exist_ok=True)
    run_all(args, work)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def run_all(args, work: Path) -> None:
    from s3edit.weights.registry import resolve_weights
    from s3edit.pipeline.align import align_video
    from s3edit.pipeline.options import pick_device
    from s3edit.pipeline.score_nets import WeightSetFaces
    from s3edit.weights.load import load_weights

    chosen = {args.only: tables()[args.only]} if args.only else tables()
    labels = {label for rows in chosen.values() for label, _ in rows}
    if args.rows is not None and set(args.rows) - labels:
        raise SystemExit(f"--rows: no row {sorted(set(args.rows) - labels)}; the tables' rows: {sorted(labels)}")
    weights = resolve_weights(args.weights) if args.weights else (
        tiny_random_weights(work / "tiny-random") if args.quick else resolve_weights(None))
    base = load_weights(weights, pick_device("auto"))
    job = align_video(args.clip, work / "clip.s3job", size=max(base.size, 64), max_frames=args.frames)
    judge = WeightSetFaces(base)  # the starting set's heads judge every row
    results: dict[str, dict[str, float]] = {}
    for rows in chosen.values():
        for label, row in rows:
            if row.key not in results and (args.rows is None or label in args.rows):
                print(f"[{row.key}] {label} ...", flush=True)
                results[row.key] = run_row(row, args, job, weights, judge, work)
                print(f"[{row.key}] {label}: " + ", ".join(f"{h} {fmt(results[row.key][c])}"
                                                          for h, c in zip(HEADERS, COLUMNS)) +
                      f", {results[row.key]['seconds']:.0f} s", flush=True)  # kept if the run stops
    print(f"\nclip {args.clip.name}, weights {weights.name}, attribute {args.attr} {args.scale:+g}, "
          f"{args.steps} tune steps, {args.decode_steps} DDIM steps, id net {args.id_net}")
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
