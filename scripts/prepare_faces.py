"""Align the training portraits of the default model
(``weights/default/TRAINING.md``, step 1).

    nice -n 10 python scripts/prepare_faces.py                  # ../shared/faces -> ~/.cache/s3edit/faces-aligned
    python scripts/prepare_faces.py PHOTOS -o OUT --size 128 --limit 20

Writes an aligned dataset folder (layout in ``s3edit.portraits.prepare``): 128-px FFHQ
crops, landmarks and the csv labels, plus ``OUT/job``, an s3edit job that
``s3edit tune OUT/job ...`` trains on. Resumable: rerun the same command after an
interruption. The output must lie outside the repository (the photos' licences allow
shipping weights trained on them, not the photos).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit import console
from s3edit.portraits.prepare import CROP_SIZE, PAD_FRACTION, PrepareConfig, prepare_portraits
from s3edit.errors import OutputError, S3EditError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "faces"
DEFAULT_OUT = Path("~/.cache/s3edit/faces-aligned")


def outside_repo(out: Path) -> Path:
    out = out.expanduser()
    if out.resolve().is_relative_to(REPO):
        raise OutputError(f"{str(out)!r} is inside the repository; the aligned photos must stay out of it "
                          f"(default {DEFAULT_OUT}).")
    return out


def main(
    root: Path = typer.Argument(DEFAULT_ROOT, help="Folder of photos (with faces.csv, or any images)."),
    out: Path = typer.Option(DEFAULT_OUT, "-o", "--output", help="Dataset folder (outside the repo)."),
    size: int = typer.Option(CROP_SIZE, "--size", min=16, help="Aligned crop side in pixels."),
    pad: float = typer.Option(PAD_FRACTION, "--pad", min=0.0, help="Padding per side, fraction of the longest side."),
    limit: int = typer.Option(None, "--limit", min=1, help="Only this many photos, spread over the list."),
    csv_path: Path = typer.Option(None, "--csv", help="Label csv (default ROOT/faces.csv when present)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again in a folder prepared with other settings."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Align portraits for training; prints aligned/skipped counts per source.

    Example: nice -n 10 python scripts/prepare_faces.py ../shared/faces -o ~/.cache/s3edit/faces-aligned
    """
    console.set_quiet(quiet)
    try:
        cfg = PrepareConfig(size=size, pad_fraction=pad, limit=limit)
        with console.make_progress() as bar:
            task = bar.add_task("align portraits", total=None, info="")
            tally = {"aligned": 0, "skipped": 0}

            def on_start(total: int, done: int) -> None:
                bar.update(task, total=total, completed=done)

            def on_item(aligned: bool) -> None:
                tally["aligned" if aligned else "skipped"] += 1
                bar.update(task, advance=1, info=f"{tally['aligned']} aligned, {tally['skipped']} skipped")

            result = prepare_portraits(root, outside_repo(out), cfg, csv_path, overwrite, on_item, on_start)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)  # one line, unwrapped (as s3edit's CLI)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"output": str(result.out), "aligned": result.aligned,
                               "skipped": result.skipped, "counts": result.counts}, indent=2))
        return
    typer.echo(f"{result.out}: {result.aligned} aligned, {result.skipped} skipped"
               + (f" ({result.resumed} rows from an earlier run)" if result.resumed else ""))
    for source, c in result.counts.items():
        typer.echo(f"  {source or '(none)':<10} aligned {c['aligned']:>5}  skipped {c['skipped']:>4}")


if __name__ == "__main__":
    typer.run(main)
