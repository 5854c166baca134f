"""Terminal output in one place: diagnostics and progress go to stderr (rich),
results to stdout. ``--quiet`` silences both progress bars and notes.

Progress on a terminal is rich's live bar. Without one (a log file, a pipe, CI), where
that bar shows only its final state, at the end, each stage prints a plain line on stderr
each time it passes another ``PLAIN_STEP`` percent of its work (at most one line per
``PLAIN_MIN_S``, and always its last)::

    encode: DDIM inversion  450/1000 (45%)  3.1/s  ETA 2m57s

The rate is the average since the stage started; the count a resumed stage skips at
its start (work an earlier run did) is left out of it. A stage of unknown length prints its
count every ``PLAIN_EVERY_S`` seconds instead."""

from __future__ import annotations

import contextlib
import sys
import time
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
        err.print(message, highlight=False, soft_wrap=True)  # one line in a log; a terminal wraps it


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


PLAIN_STEP = 5  # percent of a stage between two plain progress lines
PLAIN_MIN_S = 1.0  # and at least this many seconds (a short stage prints its last line only)
PLAIN_EVERY_S = 30.0  # seconds between two plain lines of a stage of unknown length
SKIP_S = 0.01  # work counted this soon after the start was done before it (a resumed run)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class PlainProgress:
    """Progress as plain lines on stderr, for output that is not a terminal (module
    docstring). ``clock`` and ``stream`` are injectable for tests."""

    def __init__(self, description: str, total: int | None, clock=time.monotonic, stream=None):
        self.description, self.total, self.clock = description, total, clock
        self.stream = stream
        self.done, self.info = 0, ""
        self.last_time = self.start = clock()
        self.last_done = 0  # the count at the last line
        self.skipped = 0  # the count at the start: work an earlier run did
        self.last_step = 0  # PLAIN_STEP percents reached at the last line
        self.lines = 0

    def _line(self, now: float) -> str:
        parts = [self.description]
        if self.total:
            parts.append(f"{self.done}/{self.total} ({100 * self.done // self.total}%)")
        else:
            parts.append(str(self.done))
        elapsed = now - self.start
        ended = bool(self.total) and self.done >= self.total
        if elapsed > 0 and self.done > self.skipped:
            rate = (self.done - self.skipped) / elapsed
            parts.append(f"{rate:.3g}/s")
            if self.total and not ended:
                parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if ended:
            parts.append(f"done in {_duration(now - self.start)}")
        if self.info:
            parts.append(self.info)
        return "  ".join(parts)

    def _emit(self, now: float) -> None:
        stream = self.stream or sys.stderr
        stream.write(self._line(now) + "\n")
        stream.flush()
        self.last_time, self.last_done = now, self.done
        self.lines += 1

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        if info is not None:
            self.info = info
        now = self.clock()
        if not self.lines and now - self.start < SKIP_S:  # done by an earlier run: no rate from it
            self.skipped = self.done
            return
        if self.total:
            step = min(100, 100 * self.done // self.total) // PLAIN_STEP
            if step > self.last_step and (now - self.last_time >= PLAIN_MIN_S or self.done >= self.total):
                self.last_step = step
                self._emit(now)
        elif now - self.last_time >= PLAIN_EVERY_S:
            self._emit(now)

    def finish(self) -> None:
        """The closing line of a stage whose last count was not printed (one that ended
        short of its total, or of unknown length)."""
        if self.done and (not self.lines or self.last_done != self.done):
            self._emit(self.clock())


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[callable]:
    """``with progress("align", n) as advance: advance(1, info="...")``: rich's bar on
    a terminal, plain lines otherwise, nothing under ``--quiet``."""
    if not _state["quiet"] and not err.is_terminal:
        plain = PlainProgress(description, total)
        yield plain.advance
        plain.finish()
        return
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
