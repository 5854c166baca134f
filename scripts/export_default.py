"""Ship a trained weight set as the bundled default: float16 into weights/default/,
sha256 values into weights/registry.json.

    python scripts/export_default.py ~/.cache/s3edit/train/default-64

The set must have attribute heads (``fit_heads.py --into``). Floating tensors are
stored as float16 (halves the size; the pipeline computes in float32 on a CPU anyway);
``config.json`` keeps the training record (home folder written as ``~``) and takes the
registry entry's licence. Files other than the weight set's
(``TRAINING.md``, ``MODEL_CARD.md``) stay as they are. The set's own ``checksums.json``
(written by ``save_weight_set``) ships with it. The registry's ``default`` entry gets
the new config and tensor files with their sha256 and ``"shipped": true`` (the
checksums file is derived from the same files, so the registry does not list it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
import typer

from s3edit.errors import S3EditError, WeightsError
from s3edit.weights.hashing import CHECKSUMS_FILE, sha256_file
from s3edit.weights.registry import REGISTRY_PATH
from s3edit.weights.weightset import load_weight_set, save_weight_set
from s3edit.paths import write_json_atomic

LIMIT_MB = 50.0  # the bundled set ships inside the repository: it stays under 50 MB


def export(source: Path, registry_path: Path, name: str = "default") -> list[dict]:
    """Write the float16 copy of ``source`` into the registry entry's folder and record
    its files' sha256 -> the registry's new file list."""
    registry = json.loads(registry_path.read_text())
    entry = registry["sets"][name]
    folder = registry_path.parent / entry["folder"]
    ws = load_weight_set(source)
    if ws.classifier is None:
        raise WeightsError(f"weight set {str(source)!r} has no attribute heads; add them with "
                           "`python scripts/fit_heads.py DATA -o HEADS --size S --into SET` first.")
    meta = {**ws.meta, "name": name, "licence": entry.get("licence", ws.meta.get("licence"))}
    home = str(Path.home())
    if isinstance(meta.get("source"), dict):  # no trainer's home folder in a shipped file
        meta["source"] = json.loads(json.dumps(meta["source"]).replace(home, "~"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set"
        tensors = None if ws.s3_tensors is None else {k: v.float() for k, v in ws.s3_tensors.items()}
        save_weight_set(out, ws.model, ws.config, ws.classifier, meta, dtype=torch.float16, s3_tensors=tensors)
        files = sorted(p.name for p in out.iterdir())
        size_mb = sum((out / f).stat().st_size for f in files) / 1e6
        if size_mb > LIMIT_MB:
            raise WeightsError(f"the float16 set is {size_mb:.1f} MB, over the {LIMIT_MB:g} MB limit.")
        folder.mkdir(parents=True, exist_ok=True)
        for old in entry.get("files", []):  # files of the previous export that this one lacks
            if old["filename"] not in files:
                (folder / old["filename"]).unlink(missing_ok=True)
        for f in files:
            shutil.copyfile(out / f, folder / f)
    entry["files"] = [{"filename": f, "sha256": sha256_file(folder / f)} for f in files if f != CHECKSUMS_FILE]
    entry["shipped"] = True
    entry.pop("notes", None)
    write_json_atomic(registry_path, registry)
    return entry["files"]


def main(
    source: Path = typer.Argument(..., help="Trained weight set with heads (tune + fit_heads --into)."),
    registry: Path = typer.Option(REGISTRY_PATH, "--registry", help="Registry file to update."),
    name: str = typer.Option("default", "--name", help="Registry entry (kind bundled) to ship it as."),
) -> None:
    """Copy SOURCE as float16 into the entry's folder and record sha256 in the registry.

    Example: python scripts/export_default.py ~/.cache/s3edit/train/default-64
    """
    try:
        files = export(source.expanduser(), registry, name)
    except S3EditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    for f in files:
        typer.echo(f"{f['filename']}  {f['sha256']}")


if __name__ == "__main__":
    typer.run(main)
