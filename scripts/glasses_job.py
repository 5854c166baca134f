"""Write the synthetic-glasses twins of an aligned portrait dataset as a training job.

    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned                   # -> .../glasses-job
    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style classic   # -> .../classic-glasses-job
    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style sunglasses  # -> .../sunglasses-job
    python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style classic --source congress \\
        --unless-glasses default --name congress-classic-glasses-job

For every face the Eyeglasses head is fitted on (or of the ``--source`` collections),
the same crop with glasses drawn from its landmarks (``s3edit.portraits.glasses``), plus
``<job>-pairs.json`` saying which face of ``DATA/job`` each twin is. ``--style random``
(default) seeds each face's style by its row and ``--seed``, as ``fit_heads.py`` does:
the head's positives. ``--style classic`` draws one fixed style (bold black frames):
the edit pairs the default model's decoder is taught Eyeglasses from (``s3edit tune
--pairs``); ``--style sunglasses`` (round, dark lenses) those it is taught Sunglasses
from, the second style, an attribute of its own. ``--unless-glasses W`` skips the faces that weight set's Eyeglasses head
takes to wear glasses already (probability >= ``--below``): Congress photos have no
glasses label, and many of them show real glasses. No real eyeglasses label exists in
``../shared/faces``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from s3edit import console
from s3edit.portraits.heads import GLASSES_SOURCES, rows_without
from s3edit.portraits.prepare import (
    CLASSIC_GLASSES_JOB_DIR, GLASSES_JOB_DIR, SUNGLASSES_JOB_DIR, load_portraits, pairs_path, write_glasses_job,
)
from s3edit.errors import S3EditError


def main(
    data: Path = typer.Argument(..., help="Aligned dataset folder (scripts/prepare_faces.py)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random styles (fit_heads.py's --seed)."),
    style: str = typer.Option("random", "--style", help="random (a style per face), classic or sunglasses (one style)."),
    source: list[str] = typer.Option([], "--source", help="Collections to draw on (repeatable; default: "
                                     + ", ".join(GLASSES_SOURCES) + ")."),
    unless_glasses: str = typer.Option(None, "--unless-glasses", help="Weight set whose Eyeglasses head "
                                       "picks out faces already wearing glasses, to skip."),
    below: float = typer.Option(0.5, "--below", min=0.0, max=1.0, help="Keep faces whose glasses probability is below this."),
    name: str = typer.Option(None, "--name", help="Job folder name in DATA (default: glasses-job, or classic-glasses-job)."),
) -> None:
    """Write DATA/glasses-job (or DATA/classic-glasses-job, DATA/sunglasses-job, DATA/NAME) and its pairs file; replaces earlier ones.

    Example: python scripts/glasses_job.py ~/.cache/s3edit/faces-aligned --style classic
    """
    try:
        data = data.expanduser()
        portraits = load_portraits(data)
        name = name or {"classic": CLASSIC_GLASSES_JOB_DIR, "sunglasses": SUNGLASSES_JOB_DIR}.get(style, GLASSES_JOB_DIR)
        sources = tuple(source) or GLASSES_SOURCES
        rows = np.array([i for i, item in enumerate(portraits.items) if item.get("source") in sources], np.int64)
        if unless_glasses is not None:
            from s3edit.weights.registry import resolve_weights
            from s3edit.weights.weightset import load_weight_set

            ws = load_weight_set(resolve_weights(unless_glasses))
            if ws.classifier is None or "Eyeglasses" not in ws.classifier.names:
                raise S3EditError(f"weight set {unless_glasses!r} has no Eyeglasses head to skip faces with glasses.")
            with console.progress("z_id of the candidates", None):
                rows = rows_without(portraits, rows, ws.classifier, ws.config.image_size, below=below)
        with console.progress("drawing glasses", None):
            job_dir, n = write_glasses_job(portraits, data / name, seed, style, rows)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{job_dir}: {n} faces with drawn glasses ({style}); pairs in {pairs_path(job_dir)}")


if __name__ == "__main__":
    typer.run(main)
