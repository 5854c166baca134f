"""Terminal output in one place: diagnostics and progress go to stderr (rich),
results to stdout. ``--quiet`` silences both progress bars and notes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

err = Console(stderr=True)
out = Console()
_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def note(message: str) -> None:
    """A diagnostic line on stderr (hidden by --quiet)."""
    if not _state["quiet"]:
        err.print(message, highlight=False)


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=_state["quiet"],
        transient=False,
    )


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[callable]:
    """``with progress("align", n) as advance: advance(1, info="...")``."""
    with make_progress() as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            if info is None:
                bar.advance(task, n)
            else:
                bar.update(task, advance=n, info=info)

        yield advance


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total) as advance:
        for item in items:
            yield item
            advance(1)
