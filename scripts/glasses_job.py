"""Write the synthetic-glasses twins of an aligned portrait dataset as a training job.

    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned     # -> .../glasses-job

The default model is trained on ``DATA/job`` and ``DATA/glasses-job`` together: the
second holds, for every face the Eyeglasses head is fitted on, the same crop with
glasses drawn from its landmarks (``s3edit.data.glasses``, the style seeded by the
face's row and ``--seed``, as in ``fit_heads.py``). No real eyeglasses label exists in
``../shared/faces``; these pairs teach the network what glasses look like and where the
identity code moves when they appear.
"""

from __future__ import annotations

from pathlib import Path

import typer

from s3edit import console
from s3edit.data.portraits import GLASSES_JOB_DIR, load_portraits, write_glasses_job
from s3edit.errors import S3EditError


def main(
    data: Path = typer.Argument(..., help="Aligned dataset folder (scripts/prepare_faces.py)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the glasses styles (fit_heads.py's --seed)."),
) -> None:
    """Write DATA/glasses-job; replaces an earlier one.

    Example: python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned
    """
    try:
        data = data.expanduser()
        portraits = load_portraits(data)
        with console.progress("drawing glasses", None):
            job_dir, n = write_glasses_job(portraits, data / GLASSES_JOB_DIR, seed)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{job_dir}: {n} faces with drawn glasses")


if __name__ == "__main__":
    typer.run(main)
