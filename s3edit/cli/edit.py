"""``s3edit edit JOB|VIDEO --attr NAME[=SCALE]``: edit facial attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from s3edit import console
from s3edit.cli.options import (
    DEFAULT_BATCH_SIZE,
    BatchSizeOpt,
    CompileOpt,
    DeviceOpt,
    FixedPointOpt,
    FramesOpt,
    JsonOpt,
    OverwriteOpt,
    PrecisionOpt,
    RegionOpt,
    SamplerOpt,
    StepsOpt,
    WeightsOpt,
)
from s3edit.job import Job
from s3edit.pipeline.edit import edit_job, parse_attributes
from s3edit.errors import InputError
from s3edit.pipeline.options import Compile, Device, Precision, Region, parse_frames, run_options
from s3edit.pipeline.run import edit_video, paste_edit
from s3edit.pipeline.shard import joined


def edit_cmd(
    target: Path = typer.Argument(..., help="A job folder (from `s3edit align`) or a video."),
    attr: list[str] = typer.Option(..., "--attr", "-a",
                                   help="NAME or NAME=SCALE (CelebA spelling, e.g. Eyeglasses=0.6); repeat for several."),
    scale: Optional[float] = typer.Option(None, "--scale", "-s",
                                          help="Scale of each --attr given without =SCALE (default 0.3, DVA's); "
                                               "negative removes."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Edited video to write (for a VIDEO default ./<stem>_<edit>.mp4; "
                                               "for a JOB optional)."),
    job_dir: Optional[Path] = typer.Option(None, "--job", help="Job folder for a VIDEO (default ./<stem>.s3job)."),
    size: Optional[int] = typer.Option(None, "--size", min=16,
                                       help="Crop side when a VIDEO is aligned here (default: the model's resolution)."),
    weights: WeightsOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    region: RegionOpt = Region.auto,
    frames: FramesOpt = None,
    sampler: SamplerOpt = None,
    fixed_point: FixedPointOpt = None,
    compile: CompileOpt = Compile.auto,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Edit attributes of the face: every missing stage (align, encode) runs first.

    Example: s3edit edit clip.mp4 --attr Eyeglasses --scale 0.6 -o clip_glasses.mp4

    Several at once: s3edit edit clip.job --attr Eyeglasses=0.6 --attr Smiling=0.3 -o out.mp4
    """
    attributes = parse_attributes(attr, scale)
    span = parse_frames(frames)
    shard = joined()  # under torchrun: this process's share of the frames (docs/pipeline.md)
    if target.is_dir() and span is not None:
        raise InputError("--frames picks the frames to align, so it goes with a VIDEO: `s3edit edit VIDEO "
                         "--frames A:B`; for a job, align that range with `s3edit align VIDEO --frames A:B`.")
    if target.is_dir():  # a job (Job.open explains what is wrong with any other folder)
        job = Job.open(target)
        job.require("align", "run `s3edit align VIDEO -o JOB` first.")
        run = run_options(weights, steps=steps, batch_size=batch_size, device=device, precision=precision, job=job,
                          sampler=sampler, compile=compile, fixed_point=fixed_point)
        result = edit_job(job, attributes, run, region)
        if output is not None and shard.first:
            result.video = paste_edit(result, output, overwrite)
    else:
        result = edit_video(target, attributes, output, job_dir=job_dir, weights=weights, steps=steps,
                            batch_size=batch_size, device=device, precision=precision, overwrite=overwrite,
                            size=size, region=region, sampler=sampler, frames=span,
                            compile=compile, fixed_point=fixed_point)
    if not shard.first:  # under torchrun, rank 0 writes the video and reports for every process
        return
    summary = {"job": str(result.job.root), "edit": result.name, "folder": str(result.folder),
               "frames": result.frames, "decoded": result.decoded,
               "video": str(result.video) if result.video else None}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.note(f"edit {result.name}: {result.frames} frames ({result.decoded} decoded now) in {result.folder}")
    typer.echo(str(result.video or result.folder))
