"""``s3edit score ORIGINAL EDITED``: identity and temporal metrics of an edit.

The work lives in ``s3edit.pipeline.score``; the report's table, JSON and plot in
``s3edit.metrics.report``, the contact sheet in ``s3edit.metrics.sheet``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from s3edit import console
from s3edit.cli.options import JsonOpt, OverwriteOpt, WeightsOpt
from s3edit.face.identity import DEFAULT_ID_NET, ID_NETS
from s3edit.metrics.report import render_table, write_plot
from s3edit.paths import check_output_path
from s3edit.pipeline.score import score
from s3edit.pipeline.score_nets import score_nets


def score_cmd(
    original: Path = typer.Argument(
        ..., help="Original video, or its job folder (its source video and landmarks)."),
    edited: Path = typer.Argument(
        ..., help="Edited video, or a job folder whose paste stage recorded its output."),
    # a name from the identity-net registry (which can grow), so checked there, not an Enum
    id_net: str = typer.Option(DEFAULT_ID_NET, "--id-net",
                               help=f"Identity net: {', '.join(ID_NETS)}, or arcface (the weight set's)."),
    weights: WeightsOpt = None,
    attr: str | None = typer.Option(None, "--attr",
                                    help="Attribute for TACR/NAPR, NAME or NAME=-1 for a removal "
                                         "(default: the edit EDITED's job pasted)."),
    as_json: JsonOpt = False,
    plot: Path | None = typer.Option(None, "--plot", help="Write a per-frame PNG plot here."),
    sheet: Path | None = typer.Option(None, "--sheet",
                                      help="Write a contact sheet PNG here: the face in 6 frames, original above edit."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Score an edit: ID-Preserve, TL-ID, TG-ID, PSNR in the face and temporal warp error against the original.

    Example: s3edit score clip.mp4 clip_glasses.mp4 --plot clip_glasses_score.png --sheet clip_glasses_sheet.png

    With the original's job (reuses its landmarks): s3edit score clip.job clip_glasses.mp4 --json
    """
    for picture in (plot, sheet):
        if picture is not None:
            check_output_path(picture, [original, edited], overwrite)

    net, target = score_nets(edited, original, weights=weights, attribute=attr, id_net=id_net)
    report = score(original, edited, id_net=net or id_net, attr=target, sheet=sheet)
    if plot is not None:
        write_plot(report, plot)
        console.note(f"wrote {plot}")
    if sheet is not None:
        console.note(f"wrote {sheet}")
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.out.print(render_table(report))
