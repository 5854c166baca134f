"""``s3edit weights``: list, download, import and verify weight sets.

The work lives in ``s3edit.weights``: ``registry`` (list), ``download``, ``importer``
(import) and ``verify``; these commands validate flags, call it and print (results on
stdout, notes on stderr)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from s3edit import console
from s3edit.weights import download, importer, registry, verify

weights_app = typer.Typer(
    help="List, download, import and verify model weight sets.\n\n"
    "Example: s3edit weights import epoch=51-step=1000000.ckpt --classifier last.ckpt",
    no_args_is_help=True,
)


@weights_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List known weight sets and model files, whether each is installed, and where.

    Example: s3edit weights list --json
    """
    rows = registry.list_weights()
    if as_json:
        typer.echo(json.dumps([{**vars(r), "s3_summary": registry.describe_s3(r.s3)} for r in rows], indent=2))
        return
    table = Table("name", "kind", "installed", "licence")
    table.add_column("S3", no_wrap=True)
    table.add_column("path", overflow="fold")
    for r in rows:
        name = f"{r.name} (default)" if r.default else r.name
        table.add_row(name, r.kind, "yes" if r.installed else "no", r.licence, registry.describe_s3(r.s3),
                      r.path or "-")
    console.out.print(table)


@weights_app.command("download")
def download_cmd(name: str = typer.Argument(..., help="A hub weight set from `s3edit weights list`.")) -> None:
    """Download a hub weight set into the huggingface_hub cache and check its sha256.

    Example: s3edit weights download NAME
    """
    path = download.download_weights(name)
    typer.echo(str(path))


@weights_app.command("import")
def import_cmd(
    checkpoint: Path = typer.Argument(..., help="DVA checkpoint, e.g. epoch=51-step=1000000.ckpt."),
    classifier: Path | None = typer.Option(None, "--classifier", help="DVA attribute classifier (last.ckpt)."),
    stats: Path | None = typer.Option(None, "--stats", help="DVA identity statistics (latent.pkl)."),
    name: str = typer.Option("dva", "--name", help="Name of the weight set to create (its folder in the "
                             "weights home unless -o is given)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder to write the set into (default: the weights home, "
        "$S3EDIT_HOME/weights/NAME, where --weights NAME finds it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing set of that name or folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Convert a published DVA checkpoint once into a safetensors weight set.

    The files are read without running any code from them. Exits 1 when any
    tensor fails to map (the report lists each one).

    Example: s3edit weights import epoch=51-step=1000000.ckpt --classifier last.ckpt --stats latent.pkl
    """
    result = importer.import_weights(checkpoint, name=name, classifier=classifier, stats=stats,
                                     overwrite=overwrite, output=output)
    summary = importer.import_summary(result)
    typer.echo(json.dumps(summary, indent=2) if as_json else importer.format_import_summary(summary))
    if not summary["ok"]:
        raise typer.Exit(1)


@weights_app.command("verify")
def verify_cmd(
    target: str = typer.Argument(..., help="A weight-set name, a weight-set folder, or a model-file name."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check sha256 against the registry where known and the set's checksums.json, and load every
    tensor. Exits 1 on any problem.

    Example: s3edit weights verify dva
    """
    report = verify.verify_weights(target)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else verify.format_verify(report))
    if not report.ok:
        raise typer.Exit(1)
