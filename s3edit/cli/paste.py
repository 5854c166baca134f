"""``s3edit paste``: put a job's crops (or an edit's crops) back into its video."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from s3edit.cli.options import Blend, FramesOpt, JobArg, JsonOpt, OverwriteOpt
from s3edit.face.mask import MaskConfig
from s3edit.pipeline.options import parse_frames
from s3edit.pipeline.paste import DEFAULT_BLEND, PasteConfig, paste_video
from s3edit.video.io import DEFAULT_CRF


def paste_cmd(
    job: JobArg,
    output: Path = typer.Option(..., "--output", "-o", help="Video to write (.mp4, .mkv or .mov)."),
    edit: str | None = typer.Option(
        None, "--edit", help="Paste this edit (JOB/edits/NAME); default: the original crops."),
    crf: int = typer.Option(
        DEFAULT_CRF, "--crf", min=0, max=51,
        help="H.264 quality: 0 lossless, 16-18 visually lossless, 23 smaller files."),
    dilate: int | None = typer.Option(
        None, "--dilate", min=0, help="Grow the face mask by this many crop px (default 8 at 256 px)."),
    feather: int | None = typer.Option(
        None, "--feather", min=0, help="Feather the mask edge over this many crop px (default 8 at 256 px)."),
    blend: Blend = typer.Option(
        Blend(DEFAULT_BLEND), "--blend",
        help="detail: add what the edit changed to the full-resolution frame; "
             "replace: take the crop inside the mask (STIT)."),
    frames: FramesOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Paste the aligned (or edited) crops of JOB back into its video, with its audio.

    Example: s3edit paste clip.job -o clip_out.mp4 --crf 16
    """
    config = PasteConfig(edit=edit, crf=crf, blend=blend.value, overwrite=overwrite,
                         mask=MaskConfig(dilate=dilate, feather=feather), frames=parse_frames(frames))
    result = paste_video(job, output, config)
    if as_json:
        typer.echo(json.dumps({k: str(v) if isinstance(v, Path) else v
                               for k, v in asdict(result).items()}, indent=2))
        return
    typer.echo(f"{result.output}: {result.n_frames} frames, {result.n_pasted} pasted, "
               f"{result.n_passed} untouched ({result.seconds:.1f} s)")
