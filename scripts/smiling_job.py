"""Write the Smiling edit pairs of an aligned portrait dataset as a training job.

    python scripts/smiling_job.py ~/.cache/s3edit/faces-aligned      # -> .../smiling-job

For every person of the London set (photographed neutral and smiling), the neutral crop
with the same person's smile registered and pasted into the mouth and cheeks
(``s3edit.portraits.smiling``), plus ``smiling-job-pairs.json`` saying which face of
``DATA/job`` each composite is: the pairs ``s3edit tune --pairs`` teaches the Smiling
edit from. Also writes ``smiling-job-sheet.png``: neutral, composite and smiling photo
of the first people, to check the registration by eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from s3edit import console
from s3edit.errors import S3EditError
from s3edit.portraits.prepare import (
    SMILING_JOB_DIR,
    load_portraits,
    pairs_path,
    write_smiling_job,
)


def main(
    data: Path = typer.Argument(..., help="Aligned dataset folder (scripts/prepare_faces.py)."),
    sheet_rows: int = typer.Option(8, "--sheet-rows", min=0, help="People on the check sheet (0: none)."),
) -> None:
    """Write DATA/smiling-job and its pairs file; replaces earlier ones.

    Example: python scripts/smiling_job.py ~/.cache/s3edit/faces-aligned
    """
    try:
        data = data.expanduser()
        portraits = load_portraits(data)
        with console.progress("pasting smiles", None):
            job_dir, n = write_smiling_job(portraits, data / SMILING_JOB_DIR)
        if sheet_rows:
            write_sheet(portraits, job_dir, sheet_rows)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{job_dir}: {n} neutral faces with their own smile; pairs in {pairs_path(job_dir)}")


def write_sheet(portraits, job_dir: Path, rows: int) -> Path:
    """Neutral | composite | smiling photo, one person a row."""
    from PIL import Image

    from s3edit.job import Job
    from s3edit.portraits.smiling import smiling_pairs

    pairs = smiling_pairs(portraits.items)[:rows]
    job = Job.open(job_dir)
    crops = portraits.arrays["crops"]
    made = job.read_crops(range(len(pairs)))
    sheet = np.concatenate([np.concatenate([crops[a], made[k], crops[b]], axis=1)
                            for k, (a, b) in enumerate(pairs)], axis=0)
    path = job_dir.with_name(job_dir.name + "-sheet.png")
    Image.fromarray(sheet).save(path)
    return path


if __name__ == "__main__":
    typer.run(main)
