"""The ``s3edit`` application: registers commands, holds the one error boundary.

Known errors (``S3EditError``, OS errors on user paths) print one line on stderr and
exit 1; Ctrl-C prints one line saying that rerunning continues, and exits 130; anything
else is a bug and prints one line asking for ``S3EDIT_DEBUG=1``, which shows the
traceback."""

from __future__ import annotations

import os
from typing import Optional

import typer
from typer import _click as click  # typer vendors click: its exceptions are these
from typer.core import TyperGroup

from s3edit import __version__, console
from s3edit.errors import S3EditError
from s3edit.paths import describe_os_error
from s3edit.pipeline.options import set_threads

DEBUG_ENV = "S3EDIT_DEBUG"
INTERNAL_ERROR_EXIT = 3
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report a process stopped by Ctrl-C
INTERRUPTED = ("interrupted: nothing was left half-written; rerun the same command to continue from the "
               "work already saved.")


def fail(message: str, exit_code: int = 1) -> typer.Exit:
    """Print ``error: message`` as one line on stderr; return the Exit to raise."""
    click.echo(f"error: {message}", err=True)
    return typer.Exit(exit_code)


def _describe_os_error(exc: OSError) -> str:
    """An OS error that reached the boundary as one sentence: which path, what went
    wrong, what to do (``s3edit.paths.describe_os_error``)."""
    return describe_os_error(exc)


class ErrorBoundaryGroup(TyperGroup):
    """Turns known exceptions into one clear line and a nonzero exit (the traceback
    only with S3EDIT_DEBUG=1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C: every write is atomic, so nothing is half-written
            if os.environ.get(DEBUG_ENV):
                raise
            click.echo(f"\n{INTERRUPTED}", err=True)
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except S3EditError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise fail(str(exc), exc.exit_code) from exc
        except OSError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise fail(_describe_os_error(exc)) from exc
        except Exception as exc:  # a bug: say so briefly, traceback on request
            if os.environ.get(DEBUG_ENV):
                raise
            raise fail(
                f"internal error ({type(exc).__name__}: {exc}); rerun with {DEBUG_ENV}=1 "
                "for the traceback and please report it",
                INTERNAL_ERROR_EXIT,
            ) from exc


app = typer.Typer(
    cls=ErrorBoundaryGroup,
    name="s3edit",
    help=(
        "Edit facial attributes in real videos while keeping identity, motion, "
        "background and audio.\n\n"
        "Example: s3edit edit clip.mp4 --attr Eyeglasses --scale 0.6 --weights dva -o clip_glasses.mp4"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"s3edit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads of the model commands (default: the CPUs this process may "
                                       "use less the machine's load, shared among torchrun's processes; "
                                       "OMP_NUM_THREADS when set)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    console.set_quiet(quiet)
    set_threads(threads)  # applied when a model stage starts (run_options), not for --help


# --- commands (one file per group; pipeline order) ----------------------------------
from s3edit.cli.align import align_cmd  # noqa: E402
from s3edit.cli.edit import edit_cmd  # noqa: E402
from s3edit.cli.encode import encode_cmd  # noqa: E402
from s3edit.cli.paste import paste_cmd  # noqa: E402
from s3edit.cli.score import score_cmd  # noqa: E402
from s3edit.cli.tune import tune_cmd  # noqa: E402
from s3edit.cli.weights import weights_app  # noqa: E402

app.command("align")(align_cmd)
app.command("encode")(encode_cmd)
app.command("tune")(tune_cmd)
app.command("edit")(edit_cmd)
app.command("paste")(paste_cmd)
app.command("score")(score_cmd)
app.add_typer(weights_app, name="weights")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
