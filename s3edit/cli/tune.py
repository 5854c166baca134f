"""``s3edit tune``: adapt a weight set to your footage (S3Editor self-training)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit.cli.options import (JsonOpt, KeepTarget, Objective, OverwriteOpt, PairLoss, PairSpace, PairTarget,
                               Precision, PrecisionOpt, Preset, Trainable)

from s3edit.train.loop import TrainConfig
from s3edit.pipeline.tune import format_report, tune
from s3edit.s3.selftrain import S3Config


def tune_cmd(
    inputs: list[Path] = typer.Argument(..., help="Videos or job folders to train on."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the new weight set."),
    base: str = typer.Option(None, "--from", help="Weight set to start from (name or folder)."),
    preset: Preset = typer.Option(None, "--preset", help="Train anew from a model preset."),
    objective: Objective = typer.Option(Objective("s3"), "--objective",
                                        help="s3 (S3Editor self-training) or dva (DVA's loss only)."),
    self_train: bool = typer.Option(True, "--self-train/--no-self-train", help="Pseudo-edit losses (off: DVA's loss only)."),
    routing: bool = typer.Option(True, "--routing/--no-routing", help="One transform per attribute cluster (off: K = 1)."),
    clusters: int = typer.Option(5, "--clusters", min=1, help="K, attribute clusters (K-means)."),
    sparsity: float = typer.Option(0.1, "--sparsity", min=0.0, max=1.0, help="q: zero floor(q*7K) landmark groups (0: none)."),
    train_what: Trainable = typer.Option(Trainable("all"), "--train",
                                         help="all (transforms + fusion + UNet) or transforms."),
    pairs: list[Path] = typer.Option([], "--pairs", help="Edit-pairs file (same faces without/with an attribute): teaches the decoder that edit (with the s3 objective, through the routed transforms). Repeatable."),
    pair_weight: float = typer.Option(1.0, "--pair-weight", min=0.0, help="Weight of the paired-edit loss."),
    pair_space: PairSpace = typer.Option(PairSpace("noise"), "--pair-space", help="With --pairs: where the paired-edit loss measures the error: noise (each timestep weighed by how far it moves the sampler) or x0 (the one-step image, every step of a decode alike, so that faint edits are learnt where the code decides shapes)."),
    pair_target: PairTarget = typer.Option(PairTarget("frame"), "--pair-target", help="With --pairs: what the paired-edit loss asks of an edited code: frame (the target frame) or change (a prediction that differs from the plain code's by the pair's difference, so the network's reconstruction error cancels and does not drown a faint edit)."),
    pair_gain: float = typer.Option(1.0, "--pair-gain", min=0.0, help="With --pairs: before the first step, multiply the fusion layer's response to the paired attributes' edits by this factor (1: as it is), so that an edit the decoder has not learnt yet moves its code as far as a change of sitter does."),
    pair_loss: PairLoss = typer.Option(PairLoss("l1"), "--pair-loss", help="With --pairs: the paired-edit loss's error: l1 (absolute: learns the pairs' per-pixel median change) or l2 (squared: their mean, which keeps what varied changes such as real smiles share; about ten times smaller, so raise --pair-weight about tenfold)."),
    pair_batch: int = typer.Option(0, "--pair-batch", min=0, help="Pair rows per step, over all processes (0: half of --batch-size)."),
    keep_weight: float = typer.Option(1.0, "--keep-weight", min=0.0, help="With --pairs: weight of the term that keeps every frame as it is outside the edited attribute's region under an edited code (0: off)."),
    code_noise: float = typer.Option(0.3, "--code-noise", min=0.0, help="With --pairs: std of the noise added to the paired and keep terms' normalised identity codes."),
    keep_target: KeepTarget = typer.Option(KeepTarget("noise"), "--keep-target", help="With --pairs: what the keep term holds an edited code's prediction to: noise (the frame's noise) or unedited (the plain code's one-step x0 prediction, weighted to count at every step of a decode)."),
    keep_random: float = typer.Option(0.0, "--keep-random", min=0.0, max=1.0, help="With --pairs: share of the keep term's rows whose code moves along a random direction, away from the paired attributes', and must keep the whole frame, so that only an attribute's own direction draws it (0: none)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimisation steps."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Crops per step, over all processes."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Learning rate (Adam)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (runs are reproducible and resumable)."),
    precision: PrecisionOpt = Precision.auto,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a weight set on footage; rerun the same command to resume.

    Example: s3edit tune clip.mp4 --from dva -o dva-clip --steps 500

    Paired edits: s3edit tune DATA/job --pairs DATA/classic-glasses-job-pairs.json --from default --objective dva -o mine

    Many processes (CPUs or GPUs): torchrun --nproc_per_node 4 -m s3edit.cli.app tune clip.mp4 --from dva -o dva-clip
    (or, on GPUs, accelerate launch --multi_gpu --num_processes 4 -m s3edit.cli.app tune ...)
    """
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    s3 = S3Config(self_train=self_train, routing=routing, clusters=clusters, sparsity=sparsity,
                  train=train_what.value)
    result = tune(inputs, output, base=base, preset=preset.value if preset else None, objective=objective.value,
                  cfg=cfg, s3=s3, pairs=pairs, pair_weight=pair_weight, pair_batch=pair_batch,
                  keep_weight=keep_weight, code_noise=code_noise, keep_target=keep_target.value,
                  keep_random=keep_random, pair_space=pair_space.value,
                  pair_target=pair_target.value, pair_gain=pair_gain, pair_loss=pair_loss.value,
                  precision=precision.value, overwrite=overwrite)
    if not result.is_main:
        return
    if as_json:
        summary = {"output": str(result.output), "objective": result.objective, "steps": result.steps,
                   "frames": result.frames, "first": result.first, "last": result.last,
                   "before": result.before, "after": result.after, "s3": result.s3}
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo("\n".join(format_report(result)))
