"""Write the synthetic-glasses twins of an aligned portrait dataset as a training job.

    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned                   # -> .../glasses-job
    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style classic   # -> .../classic-glasses-job

For every face the Eyeglasses head is fitted on, the same crop with glasses drawn from
its landmarks (``s3edit.data.glasses``), plus ``<job>-pairs.json`` saying which face of
``DATA/job`` each twin is. ``--style random`` (default) seeds each face's style by its
row and ``--seed``, as ``fit_heads.py`` does: the head's positives. ``--style classic``
draws one fixed style (bold black frames): the edit pairs the default model's decoder
is taught Eyeglasses from (``s3edit tune --pairs``). No real eyeglasses label exists in
``../shared/faces``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from s3edit import console
from s3edit.data.portraits import CLASSIC_GLASSES_JOB_DIR, GLASSES_JOB_DIR, load_portraits, pairs_path, write_glasses_job
from s3edit.errors import S3EditError


def main(
    data: Path = typer.Argument(..., help="Aligned dataset folder (scripts/prepare_faces.py)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random styles (fit_heads.py's --seed)."),
    style: str = typer.Option("random", "--style", help="random (a style per face) or classic (one style)."),
) -> None:
    """Write DATA/glasses-job (or DATA/classic-glasses-job) and its pairs file; replaces earlier ones.

    Example: python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style classic
    """
    try:
        data = data.expanduser()
        portraits = load_portraits(data)
        name = CLASSIC_GLASSES_JOB_DIR if style == "classic" else GLASSES_JOB_DIR
        with console.progress("drawing glasses", None):
            job_dir, n = write_glasses_job(portraits, data / name, seed, style)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{job_dir}: {n} faces with drawn glasses ({style}); pairs in {pairs_path(job_dir)}")


if __name__ == "__main__":
    typer.run(main)
