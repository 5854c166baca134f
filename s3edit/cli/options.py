"""Options shared by several commands, declared once (typed aliases, as huggingface_hub's
CLI does) so their names, defaults and help read the same everywhere."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from s3edit.face.detect import DETECTORS
from s3edit.model.config import PRESETS
from s3edit.pipeline.options import DEFAULT_BATCH, Compile, Device, Precision, Region, Sampler
from s3edit.pipeline.paste import BLEND_MODES
from s3edit.pipeline.tune import OBJECTIVES
from s3edit.s3.selftrain import TRAINABLE
from s3edit.train.objective import KEEP_TARGETS, PAIR_LOSSES, PAIR_SPACES, PAIR_TARGETS

Detector = Enum("Detector", {name: name for name in DETECTORS}, type=str)
Blend = Enum("Blend", {name: name for name in BLEND_MODES}, type=str)
Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)
Objective = Enum("Objective", {name: name for name in OBJECTIVES}, type=str)
Trainable = Enum("Trainable", {name: name for name in TRAINABLE}, type=str)
KeepTarget = Enum("KeepTarget", {name: name for name in KEEP_TARGETS}, type=str)
PairSpace = Enum("PairSpace", {name: name for name in PAIR_SPACES}, type=str)
PairTarget = Enum("PairTarget", {name: name for name in PAIR_TARGETS}, type=str)
PairLoss = Enum("PairLoss", {name: name for name in PAIR_LOSSES}, type=str)

WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="Weight set: a registry name or a folder (default: the job's, else the registry's).")]
StepsOpt = Annotated[Optional[int], typer.Option(
    "--steps", min=1, help="DDIM steps (default: the job's encode steps, else 20 with the s3edit sampler, which "
                           "--fixed-point makes as faithful as 100 plain steps, and 100 with dva's).")]
BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, help="Frames per UNet pass (memory grows with it).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto (cuda when available), cpu or cuda.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="UNet precision: auto (bf16 on CPUs with native bf16 instructions, fp32 elsewhere, "
                        "CUDA included), fp32, bf16 or fp16 (CUDA only). tune trains in fp32 or bf16 autocast over fp32 weights.")]
CompileOpt = Annotated[Compile, typer.Option(
    "--compile", help="torch.compile the UNet: auto (off: compiling takes minutes and has not been measured "
                      "to pay on a CPU or a GPU), on or off. Falls back to eager, with a note, when compiling fails.")]
SamplerOpt = Annotated[Optional[Sampler], typer.Option(
    "--sampler", help="DDIM sampler: s3edit (exact inversion, no clipping) or dva (DVA's own: encode from "
                      "alpha_bar[0] in S-1 steps, x0 clipped; steps must divide 1000). Default: the job's, "
                      "else the weight set's (dva for sets imported from DVA). Another sampler re-encodes x_T.")]
FixedPointOpt = Annotated[Optional[int], typer.Option(
    "--fixed-point", min=0, help="Fixed-point corrections per encode step (s3edit sampler): each costs one more "
                                 "pass and makes the inversion closer to exact, so fewer --steps reconstruct as "
                                 "well (docs/sampler.md). Default: the job's, else 2 (0 with --sampler dva). "
                                 "Other corrections re-encode x_T.")]
RegionOpt = Annotated[Region, typer.Option(
    "--region", help="auto: an attribute with a known region (Eyeglasses: the eyes' frames, the eyes seen "
                     "through clear lenses kept) changes only that region, the rest of the face stays the "
                     "original (0.7 times the decode passes); whole: the edit may "
                     "change the whole face (DVA's way).")]
FramesOpt = Annotated[Optional[str], typer.Option(
    "--frames", help="Only frames A:B (from frame A up to, not including, B; A: or :B), counted from 0 - a quick "
                     "preview of part of a clip; the rest of the video passes through untouched.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
JobArg = Annotated[Path, typer.Argument(help="Job folder made by `s3edit align`.")]

DEFAULT_BATCH_SIZE = DEFAULT_BATCH
