"""Write the Smiling edit pairs of an aligned portrait dataset as a training job.

    python scripts/smiling_job.py ~/.cache/s3edit/faces-aligned                   # -> .../smiling-job
    python scripts/smiling_job.py ~/.cache/s3edit/faces-aligned --style classic   # -> .../classic-smiling-job

``--style own`` (default): for every person of the London set (photographed neutral and
smiling), the neutral crop with the same person's smile registered and pasted into the
mouth and cheeks. ``--style classic``: for every face of the ``--source`` collections
not photographed smiling, the same crop with one smile, the classic one, moved onto its
mouth from its landmarks (``s3edit.portraits.smiling``). Either way, plus
``<job>-pairs.json`` saying which face of ``DATA/job`` each twin is: the pairs ``s3edit
tune --pairs`` teaches the Smiling edit from. Also writes ``<job>-sheet.png``, one face a
row (neutral, twin, and for ``own`` the smiling photo), to check the twins by eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from s3edit import console
from s3edit.errors import S3EditError
from s3edit.portraits.prepare import (
    CLASSIC_SMILING_JOB_DIR,
    SMILING_JOB_DIR,
    load_portraits,
    pairs_path,
    write_smiling_job,
)
from s3edit.portraits.smiling import CLASSIC_SMILE_SOURCES, classic_smile_rows


def main(
    data: Path = typer.Argument(..., help="Aligned dataset folder (scripts/prepare_faces.py)."),
    style: str = typer.Option("own", "--style", help="own (each London sitter's own smile) or classic (one smile on every face)."),
    source: list[str] = typer.Option([], "--source", help="Collections to draw the classic smile on (repeatable; "
                                     "default: " + ", ".join(CLASSIC_SMILE_SOURCES) + ")."),
    sheet_rows: int = typer.Option(8, "--sheet-rows", min=0, help="Faces on the check sheet (0: none)."),
) -> None:
    """Write DATA/smiling-job (or DATA/classic-smiling-job) and its pairs file; replaces earlier ones.

    Example: python scripts/smiling_job.py ~/.cache/s3edit/faces-aligned --style classic
    """
    try:
        data = data.expanduser()
        portraits = load_portraits(data)
        rows = None
        if style == "classic":
            rows = classic_smile_rows(portraits.items, tuple(source) or CLASSIC_SMILE_SOURCES)
        name = CLASSIC_SMILING_JOB_DIR if style == "classic" else SMILING_JOB_DIR
        with console.progress("making smiles", None):
            job_dir, n = write_smiling_job(portraits, data / name, style, rows)
        if sheet_rows:
            write_sheet(portraits, job_dir, sheet_rows, style)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{job_dir}: {n} faces with a smile ({style}); pairs in {pairs_path(job_dir)}")


def write_sheet(portraits, job_dir: Path, rows: int, style: str) -> Path:
    """Neutral | twin (| smiling photo, for the sitters' own smiles), one face a row."""
    from PIL import Image

    from s3edit.job import Job
    from s3edit.train.pairs import read_pairs

    frames = np.asarray(read_pairs(pairs_path(job_dir)).frames, np.int64)[:rows]
    job = Job.open(job_dir)
    crops = portraits.arrays["crops"]
    made = job.read_crops(range(len(frames)))
    columns = [crops[frames[:, 0]], made]
    if style == "own":
        from s3edit.portraits.smiling import smiling_pairs

        columns.append(crops[smiling_pairs(portraits.items)[: len(frames), 1]])
    sheet = np.concatenate([np.concatenate(row, axis=1) for row in zip(*columns)], axis=0)
    path = job_dir.with_name(job_dir.name + "-sheet.png")
    Image.fromarray(sheet).save(path)
    return path


if __name__ == "__main__":
    typer.run(main)
