"""``s3edit encode JOB``: identity, landmarks and DDIM noise maps of every aligned frame."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit.model.ddim import DEFAULT_STEPS
from s3edit.pipeline.encode import DEFAULT_BATCH, encode_job


def encode_cmd(
    job: Path = typer.Argument(..., help="Job folder made by `s3edit align`."),
    weights: str | None = typer.Option(None, "--weights", "-w",
                                       help="Weight set: a registry name or a folder (default: the registry's default)."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help="DDIM steps (DVA's paper: SSIM 0.922 at 100, 0.540 at 20)."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", "-b", help="Frames per UNet pass (memory grows with it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."),
    as_json: bool = typer.Option(False, "--json", help="Print the stage summary as JSON."),
) -> None:
    """Encode an aligned job: z_id, z_lnd, z_face and the DDIM noise map x_T of every frame.

    Cached in JOB/latents: a rerun with the same weights and steps does nothing, and
    every later `s3edit edit` of the job costs decoding steps only.

    Example: s3edit encode clip.job --weights dva --steps 100 --batch-size 8
    """
    done = encode_job(job, weights, steps=steps, batch_size=batch_size, device=device, precision=precision)
    entry = done.stage("encode")
    if as_json:
        typer.echo(json.dumps({"job": str(done.root), **entry}, indent=2))
        return
    typer.echo(f"{done.root}: {entry['frames']} frames encoded with {entry.get('weights_name') or 'weights'} "
               f"({entry['params']['steps']} DDIM steps) in {done.latents_dir}")
