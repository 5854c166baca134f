"""The ``tune`` stage: adapt a weight set to footage (or aligned jobs).

    tune(["clip.mp4"], "my-weights", base="dva")                         # S3Editor
    tune(["clip.mp4"], "my-weights", base="dva", s3=S3Config(sparsity=0))  # ablation
    tune(["clip.mp4"], "my-dva", preset="small-64", objective="dva")       # DVA's loss

Inputs are videos (aligned first at the model's resolution, into ``./<stem>.s3job``
like ``edit`` does) or job folders. The model starts from a weight set (``base``) or
fresh from a preset. Objectives:

- ``s3`` (default): S3Editor's self-training with routed cluster transforms and
  structured sparsity (``s3edit.s3.selftrain``; needs a weight set with attribute
  heads). The new set records K, q, the clusters and the zeroed groups in config.json
  "s3" and the transforms in ``s3.safetensors``.
- ``dva``: DVA's denoising loss only (``s3edit.train.objective``); "s3" stays null.
  With ``pairs`` (pairs files, ``s3edit.train.pairs``: the same faces without and with
  an attribute), plus the paired-edit term ``L_pair`` (``s3edit.train.objective.PairTerm``)
  that teaches the decoder what an edit of that attribute draws; the pairs' jobs are
  loaded if they are not among the inputs (their frames then feed the paired term
  only, not DVA's loss), and the attribute must be one of the set's heads.

The UNet and fusion written out are the EMA copy (as DVA's); the transforms are the
best sparse iterate (an EMA would blur the exact zeros of the pruned groups).
Training state is checkpointed in ``<out>.tune/`` beside the output, so an
interrupted run resumes where it stopped (same command, same options), and a finished
one trains on when rerun with a larger ``steps`` (``check_output``). ``precision``
``auto`` trains in bf16 mixed precision on CPUs with native bf16 instructions, in fp32
elsewhere (``s3edit.train.loop``); a run resumes under either.

Scale-out (Hugging Face Accelerate, DDP): the same command runs under ``torchrun
--nproc_per_node N -m s3edit.cli.app tune ...`` on CPUs (gloo) or GPUs (NCCL), or
``accelerate launch --multi_gpu --num_processes N -m s3edit.cli.app tune ...`` on GPUs
(Accelerate's own CPU multi-process launcher needs MPI; torchrun does not). The global
``--batch-size`` is split over the processes; only the main process aligns, shows
progress and writes the output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from s3edit import console
from s3edit.train.pairs import EditPairs, read_pairs, resolve_pairs
from s3edit.errors import InputError, OutputError, WeightsError
from s3edit.job import Job, default_job_dir
from s3edit.model.config import preset as model_preset
from s3edit.train.data import load_jobs
from s3edit.model.dva import build_dva
from s3edit.weights.registry import resolve_weights
from s3edit.train.loop import RUN_KEYS, TrainConfig, check_precision, make_accelerator
from s3edit.train.objective import (KEEP_TARGETS, PAIR_CODE_NOISE, PAIR_LOSSES, PAIR_SPACES, PAIR_TARGETS, PairTerm,
                                    train_dva)
from s3edit.weights.weightset import S3EDIT_RULES, WeightSet, load_weight_set, read_config, save_weight_set
from s3edit.pipeline.align import MIN_SIZE, align_video
from s3edit.pipeline.options import describe_precision, pick_precision
from s3edit.model.attributes import edit_direction
from s3edit.s3.selftrain import S3Config, check_trainable, first_last, train_s3

OBJECTIVES = ("s3", "dva")
TERMS = ("loss", "gen", "id", "faith", "pair", "keep")  # shown on the progress bar, in this order


@dataclass
class TuneResult:
    output: Path
    objective: str
    steps: int
    frames: int
    first: dict[str, float] = field(default_factory=dict)  # loss terms, mean of the first steps
    last: dict[str, float] = field(default_factory=dict)  # ... of the last steps
    s3: dict | None = None  # the "s3" record of the new weight set
    before: dict[str, float] = field(default_factory=dict)  # s3: objective on fixed draws, start weights
    after: dict[str, float] = field(default_factory=dict)  # ... and the written weights
    is_main: bool = True  # False on the other processes of a distributed run (they print nothing)


def prepare_jobs(inputs: list[str | os.PathLike], size: int = 256) -> list[Job]:
    """Videos are aligned at ``size`` (or their existing job reused); job folders are opened."""
    jobs = []
    for item in inputs:
        path = Path(item)
        if Job.is_job(path):
            jobs.append(Job.open(path))
        elif path.is_dir():
            raise InputError(f"{str(path)!r} is a folder but not an s3edit job; pass videos or job folders.")
        else:
            jobs.append(align_video(path, default_job_dir(path), size=max(size, MIN_SIZE)))
    return jobs


def with_pair_jobs(jobs: list[Job], pairs: list[EditPairs]) -> list[Job]:
    """``jobs`` plus the pairs' jobs that are not among them (in the pairs' order)."""
    roots = [j.root.resolve() for j in jobs]
    out = list(jobs)
    for p in pairs:
        for path in (p.without, p.with_):
            if path.resolve() not in roots:
                if not Job.is_job(path):
                    raise InputError(f"{str(p.path)!r} names job {str(path)!r}, which is not an s3edit job.")
                out.append(Job.open(path))
                roots.append(path.resolve())
    return out


def pair_term(pairs: list[EditPairs], jobs: list[Job], start: WeightSet, weight: float,
              batch: int = 0, inputs: int | None = None, keep: float = 1.0,
              code_noise: float = PAIR_CODE_NOISE, keep_target: str = "noise",
              keep_random: float = 0.0, space: str = "noise", target: str = "frame",
              gain: float = 1.0, loss: str = "l1") -> PairTerm:
    """The paired-edit term of ``pairs`` over the data of ``jobs`` (in that order), of
    which the first ``inputs`` jobs (None: all) take DVA's loss too."""
    if start.classifier is None:
        raise InputError("--pairs needs a weight set with attribute heads (their directions are the edits); "
                         "tune --from one, e.g. default.")
    names = list(start.classifier.names)
    for p in pairs:
        if p.attribute not in names:
            raise InputError(f"{str(p.path)!r} pairs attribute {p.attribute!r}, which the weight set has no "
                             f"head for (it has {', '.join(names)}).")
    used = sorted({p.attribute for p in pairs}, key=names.index)
    numbers = [j.aligned_frames().indices for j in jobs]
    roots = [j.root for j in jobs]
    rows = [resolve_pairs(p, roots, numbers) for p in pairs]
    attribute = [torch.full((len(r),), used.index(p.attribute), dtype=torch.int64) for p, r in zip(pairs, rows)]
    w = start.classifier.weight
    return PairTerm(
        rows=torch.from_numpy(np.concatenate(rows)), attribute=torch.cat(attribute),
        directions=edit_direction(torch.stack([w[names.index(n)] for n in used]).float()),
        conds_mean=start.classifier.conds_mean.float(), conds_std=start.classifier.conds_std.float(),
        names=tuple(used), weight=weight, batch=batch, sources=tuple(str(p.path) for p in pairs), keep=keep,
        code_noise=code_noise, keep_target=keep_target, keep_random=keep_random, space=space, target=target,
        gain=gain, loss=loss, plain_frames=None if inputs is None or inputs >= len(jobs) else int(sum(len(n) for n in numbers[:inputs])))


def starting_point(base: str | None, preset: str | None) -> WeightSet:
    if (base is None) == (preset is None):
        raise InputError("give exactly one of --from WEIGHTS (tune a weight set) or --preset NAME (train anew).")
    if base is not None:
        return load_weight_set(resolve_weights(base))
    try:
        config = model_preset(preset)
    except KeyError as exc:
        raise InputError(str(exc.args[0]) + ".") from exc
    return WeightSet(config=config, model=build_dva(config), meta={"name": preset})


def progress_info(parts: dict[str, float]) -> str:
    return " ".join(f"{k} {parts[k]:.4f}" for k in TERMS if k in parts)


def tune(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    base: str | None = None,
    preset: str | None = None,
    objective: str = "s3",
    cfg: TrainConfig = TrainConfig(),
    s3: S3Config = S3Config(),
    pairs: list[str | os.PathLike] = (),
    pair_weight: float = 1.0,
    pair_batch: int = 0,
    keep_weight: float = 1.0,
    code_noise: float = PAIR_CODE_NOISE,
    keep_target: str = "noise",
    keep_random: float = 0.0,
    pair_space: str = "noise",
    pair_target: str = "frame",
    pair_gain: float = 1.0,
    pair_loss: str = "l1",
    precision: str = "auto",
    overwrite: bool = False,
    accelerator=None,
) -> TuneResult:
    """Train and write a new weight set at ``out`` (module docstring). ``precision``:
    auto, fp32 or bf16 (``pick_precision``; ``cfg.precision`` is replaced by it)."""
    out = Path(out)
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}.")
    if not inputs:
        raise InputError("give at least one video or job folder to tune on.")
    if keep_target not in KEEP_TARGETS:
        raise InputError(f"unknown keep target {keep_target!r}; choose one of {', '.join(KEEP_TARGETS)}.")
    if pair_space not in PAIR_SPACES:
        raise InputError(f"unknown pair space {pair_space!r}; choose one of {', '.join(PAIR_SPACES)}.")
    if pair_target not in PAIR_TARGETS:
        raise InputError(f"unknown pair target {pair_target!r}; choose one of {', '.join(PAIR_TARGETS)}.")
    if pair_loss not in PAIR_LOSSES:
        raise InputError(f"unknown pair loss {pair_loss!r}; choose one of {', '.join(PAIR_LOSSES)}.")
    if not pair_gain > 0:
        raise InputError(f"--pair-gain multiplies the fusion layer's response to an edit; give a positive factor, not {pair_gain}.")
    if not 0.0 <= keep_random <= 1.0:
        raise InputError(f"--keep-random is a share of the keep term's rows, between 0 and 1, not {keep_random}.")
    if objective == "s3":
        check_trainable(s3, bool(pairs), pair_gain)
    acc = accelerator or make_accelerator()
    cfg = dataclasses.replace(cfg, precision=pick_precision(precision, acc.device))
    check_precision(cfg.precision)
    pair_files = [read_pairs(p) for p in pairs]
    torch.manual_seed(cfg.seed)  # a preset's initial weights follow --seed
    start = starting_point(base, preset)
    origin = start.name or base or preset
    replace = check_output(out, overwrite, run_source(origin, objective, cfg, s3, None, inputs),
                           ignore=("pairs",) if pair_files else ())
    if objective == "s3" and start.classifier is None:
        raise InputError(f"{'preset ' + preset if preset else 'weight set ' + repr(base)} has no attribute "
                         "classifier, which the s3 objective needs; tune --from a weight set with one "
                         "(e.g. dva), or use --objective dva.")
    if not acc.is_main_process:
        console.set_quiet(True)
    console.note(describe_precision(cfg.precision, acc.device))
    torch.manual_seed(cfg.seed)
    with acc.main_process_first():  # the main process aligns; the others reuse its jobs
        jobs = with_pair_jobs(prepare_jobs(inputs, start.config.image_size), pair_files)
        data = load_jobs(jobs, start.config.image_size)
    term = (pair_term(pair_files, jobs, start, pair_weight, pair_batch, len(inputs), keep_weight, code_noise,
                      keep_target, keep_random, pair_space, pair_target, pair_gain, pair_loss)
            if pair_files else None)
    if term is not None:  # the pairs' record is known only now
        replace = check_output(out, overwrite, run_source(origin, objective, cfg, s3, term, inputs))
    checkpoints = out.with_name(out.name + ".tune")
    with console.progress(f"tune ({objective})", cfg.steps) as advance:
        shown = [0]

        def on_step(step: int, parts: dict[str, float]) -> None:  # a resumed run starts past 0
            advance(step - shown[0], info=progress_info(parts))
            shown[0] = step

        if objective == "s3":
            run = train_s3(start, data, cfg, s3, checkpoints, on_step, acc, keep_other=not overwrite, pairs=term)
            result, record, s3_tensors = run.train, run.record, run.transforms.state_dict()
            evaluated = (run.before, run.after)
        else:
            result = train_dva(start.model, data, cfg, checkpoints, on_step, acc, pairs=term,
                               keep_other=not overwrite)
            record, s3_tensors, evaluated = None, None, ({}, {})
    first, last = first_last(result.losses)
    if acc.is_main_process:
        write_output(out, start, result.ema, run_source(origin, objective, cfg, s3, term, inputs, len(data)),
                     record, s3_tensors, replace)
    acc.wait_for_everyone()
    return TuneResult(out, objective, cfg.steps, len(data), first, last, record, *evaluated,
                      is_main=acc.is_main_process)


def run_source(origin: str | None, objective: str, cfg: TrainConfig, s3: S3Config, pairs: PairTerm | None,
               inputs, frames: int | None = None) -> dict:
    """config.json's "source" record of a run: where it started, what it trained on, how."""
    return {
        "tuned_from": origin,
        "objective": objective,
        "train": asdict(cfg),
        **({"s3": asdict(s3)} if objective == "s3" else {}),
        **({"pairs": pairs.describe()} if pairs is not None else {}),
        **({"frames": frames} if frames is not None else {}),
        "inputs": [str(Path(p)) for p in inputs],
    }


def check_output(out: Path, overwrite: bool, source: dict, ignore: tuple[str, ...] = ()) -> bool:
    """Whether the run may write ``out``, replacing an existing set (True) or not (False,
    there is none). An existing set is replaced with ``overwrite``, or when it is this
    very run's output with fewer steps: rerunning a finished ``tune`` with a larger
    ``--steps`` trains on from its checkpoint (``<out>.tune/``), and the longer-trained
    set is what that command asks for. Anything else raises OutputError. ``ignore``: keys
    of ``source`` not known yet (the pairs' record before the pairs are loaded)."""
    if not out.exists():
        return False
    if overwrite:
        return True
    try:
        previous = read_config(out).get("source") or {}
    except WeightsError:
        previous = {}

    def run(src: dict) -> dict:  # the source record less what a longer (or faster) run changes
        src = {k: v for k, v in src.items() if k not in ("frames", *ignore)}
        return {**src, "train": {k: v for k, v in src.get("train", {}).items() if k not in RUN_KEYS}}

    asked = json.loads(json.dumps(source))  # tuples as lists, as config.json reads back
    if previous and run(previous) == run(asked):
        done = int(previous["train"].get("steps", 0))
        if asked["train"]["steps"] > done:
            return True
        raise OutputError(f"weight set {str(out)!r} already holds {done} steps of this run; ask for more "
                          "--steps to train it on, or pass --overwrite to replace it.")
    raise OutputError(f"weight set {str(out)!r} already exists; pass --overwrite to replace it.")


def write_output(out: Path, start: WeightSet, model, source: dict, record: dict | None, s3_tensors: dict | None,
                 overwrite: bool = False) -> Path:
    """Save the trained set with ``start``'s config and heads, the run's ``source``
    record and S3Editor's ``record`` and transforms (if any)."""
    meta = dict(start.meta)
    meta["name"] = out.name
    meta["source"] = source
    meta["s3"] = record
    meta.update(S3EDIT_RULES)  # a tuned set is s3edit's, whatever set it started from (docs/sampler.md)
    meta.setdefault("licence", "same as the data and the starting weights")
    tensors = None if s3_tensors is None else {k: v.detach().float().cpu() for k, v in s3_tensors.items()}
    return save_weight_set(out, model, start.config, start.classifier, meta, overwrite=overwrite,
                           s3_tensors=tensors)


def format_report(result: TuneResult) -> list[str]:
    """The short report ``s3edit tune`` prints: losses first -> last, groups zeroed."""
    lines = [f"{result.output}: {result.objective}, {result.steps} steps on {result.frames} crops"]
    if not result.first:
        lines.append("  every step was already in the checkpoint: the weights were written from it")
    else:
        lines.append("  training loss (mean of the first -> last steps):")
    for term in TERMS:
        if term in result.first and term in result.last:
            lines.append(f"    {term:<6} {result.first[term]:.4f} -> {result.last[term]:.4f}")
    if result.before and result.after:
        lines.append("  objective on fixed draws (start -> written weights):")
        for term in TERMS:
            if term in result.before and term in result.after:
                lines.append(f"    {term:<6} {result.before[term]:.4f} -> {result.after[term]:.4f}")
    if result.s3:
        rec = result.s3
        lines.append(f"  K={rec['K']} q={rec['q']}: {len(rec['groups_zeroed'])} of {rec['groups']} "
                     "landmark groups zeroed")
        for k, regions in rec["zeroed_per_cluster"].items():
            members = ", ".join(rec["members"][k][:4]) + (", ..." if len(rec["members"][k]) > 4 else "")
            lines.append(f"    T{k} ({members}): {', '.join(regions) or 'none'}")
    return lines
