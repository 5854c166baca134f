"""``s3edit edit JOB|VIDEO --attr NAME[=SCALE]``: edit facial attributes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit import console
from s3edit.job import Job
from s3edit.pipeline.edit import edit_job, edit_video, paste_edit, parse_attributes
from s3edit.pipeline.encode import DEFAULT_BATCH


def edit_cmd(
    target: Path = typer.Argument(..., help="A job folder (from `s3edit align`) or a video."),
    attr: list[str] = typer.Option(..., "--attr", "-a",
                                   help="NAME or NAME=SCALE (CelebA spelling, e.g. Eyeglasses=0.6); repeat for several."),
    scale: float | None = typer.Option(None, "--scale", "-s",
                                       help="Scale of each --attr given without =SCALE (default 0.3, DVA's); negative removes."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Edited video to write (for a VIDEO default ./<stem>_<edit>.mp4; for a JOB optional)."),
    job_dir: Path | None = typer.Option(None, "--job", help="Job folder for a VIDEO (default ./<stem>.s3job)."),
    size: int | None = typer.Option(None, "--size", min=16,
                                    help="Crop side when a VIDEO is aligned here (default: the model's resolution)."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weight set name or folder (default: the job's, else the registry's)."),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default: the job's encode steps, else 100)."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", "-b", help="Frames per UNet pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."),
    region: str = typer.Option("auto", "--region",
                               help="auto: an attribute with a known region (Eyeglasses: the eyes) changes only that "
                                    "region, the rest of the face stays the original (1.7 times the decode passes); "
                                    "whole: the edit may change the whole face (DVA's way)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output video."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON."),
) -> None:
    """Edit attributes of the face: every missing stage (align, encode) runs first.

    Example: s3edit edit clip.mp4 --attr Eyeglasses --scale 0.6 -o clip_glasses.mp4

    Several at once: s3edit edit clip.job --attr Eyeglasses=0.6 --attr Smiling=0.3 -o out.mp4
    """
    attributes = parse_attributes(attr, scale)
    options = dict(weights=weights, steps=steps, batch_size=batch_size, device=device, precision=precision,
                   region=region)
    if target.is_dir():  # a job (Job.open explains what is wrong with any other folder)
        result = edit_job(Job.open(target), attributes, **options)
        if output is not None:
            result.video = paste_edit(result, output, overwrite)
    else:
        result = edit_video(target, attributes, output, job_dir=job_dir, overwrite=overwrite, size=size, **options)
    summary = {"job": str(result.job.root), "edit": result.name, "crops": str(result.folder / "crops"),
               "frames": result.frames, "decoded": result.decoded,
               "video": str(result.video) if result.video else None}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.note(f"edit {result.name}: {result.frames} frames ({result.decoded} decoded now) in {result.folder}")
    typer.echo(str(result.video or result.folder / "crops"))
