"""``s3edit align``: detect, track and smooth one face; write aligned crops to a job."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit.cli.options import Detector, FramesOpt, JsonOpt
from s3edit.pipeline.align import align_video
from s3edit.pipeline.options import parse_frames


def align_cmd(
    video: Path = typer.Argument(..., help="Source video (anything FFmpeg reads)."),
    output: Path = typer.Option(..., "--output", "-o", help="Job folder to create or resume."),
    size: int = typer.Option(256, "--size", min=16, help="Side of the square crops, pixels."),
    detector: Detector = typer.Option(
        Detector("dlib"), "--detector",
        help="Face detector: dlib (HOG, then dlib's CNN on frames HOG finds nothing in), hog or cnn alone, "
             "fan (face-alignment; downloads its weights on first use)."),
    face: int | None = typer.Option(None, "--face", min=1,
                                    help="Track the N-th face, counted from 1 left to right "
                                         "(default: the largest, most central)."),
    max_gap: int | None = typer.Option(None, "--max-gap", min=0,
                                       help="Longest detection gap filled, frames (default 0.4 s)."),
    sigma_centre: float = typer.Option(1.0, "--sigma-centre", min=0.0, help="Smoothing of the crop centre, frames."),
    sigma_axes: float = typer.Option(3.0, "--sigma-axes", min=0.0, help="Smoothing of the crop size/angle, frames."),
    preview: bool = typer.Option(False, "--preview", help="Also write align/preview.png (contact sheet)."),
    frames: FramesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Align the face in VIDEO: aligned square crops, transforms and landmarks in JOB.

    Example: s3edit align clip.mp4 -o clip.job --preview
    """
    start, stop = parse_frames(frames) or (0, None)
    job = align_video(video, output, size=size, detector=detector.value, face=face,
                      max_gap=max_gap, sigma_centre=sigma_centre, sigma_axes=sigma_axes,
                      preview=preview, start=start, max_frames=stop)
    s = job.stage("align")
    if as_json:
        typer.echo(json.dumps({"job": str(job.root), **s}, indent=2))
        return
    typer.echo(f"{job.root}: {s['frames']} frames, {s['frames_with_face']} with a face, "
               f"{s['gaps_filled']} gaps filled ({s['frames_filled']} frames), "
               f"{s['long_gaps']} long gaps ({s['frames'] - s['frames_valid']} frames left untouched)")
