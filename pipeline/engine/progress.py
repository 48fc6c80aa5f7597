"""Console output that reads well anywhere: live bars on a terminal, plain lines in a log.

On a terminal (or in Jupyter) `progress_bar` shows a transient rich bar. When the
output is a file or a pipe (a cluster job's log, CI, `tee`) it shows nothing, and
the caller's own event lines (one per epoch, one per stage event) are the log;
`make_console` keeps those lines whole: no wrapping at 80 columns, no control codes.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def make_console(stderr: bool = True):
    """A rich Console for progress and stage events; outside a terminal it never wraps a line."""
    from rich.console import Console  # deferred: 0.1 s to import, and `dlkdd --help` prints without it
    console = Console(stderr=stderr)
    if not (console.is_terminal or console.is_jupyter):
        console.soft_wrap = True  # a log line stays one line however long it is
    return console


def say(console, text: str, style: str | None = None) -> None:
    """Print `text` as is (no markup, no highlighting): paths and figures stay literal."""
    console.print(text, style=style, markup=False, highlight=False)


def shows_live(console) -> bool:
    """Whether a live bar belongs on this console: a terminal or a notebook, and not quiet."""
    return console is not None and not console.quiet and (console.is_terminal or console.is_jupyter)


@contextmanager
def progress_bar(console, label: str, total: int, unit: str | None = None) -> Iterator[Callable[..., None]]:
    """Yields `update(completed, text=None)`: a live `label ━━ n/total <rate> <text> ETA` bar on a
    terminal; a no-op elsewhere. With `unit` the bar shows the rate in `unit`/s; `text=None` keeps
    the previous text (so a caller can refresh costly figures less often than the count)."""
    if not shows_live(console):
        yield lambda completed, text=None: None
        return
    # deferred: 0.1 s to import, and only a terminal shows a bar (logs and pipes never do)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    start, shown = time.perf_counter(), {"text": ""}
    with Progress(TextColumn(label, markup=False), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[text]}", markup=False), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=total, text="")

        def update(completed: int, text: str | None = None) -> None:
            if text is not None:
                shown["text"] = text
            rate = f"{completed / max(1e-9, time.perf_counter() - start):.1f} {unit}/s" if unit else ""
            bar.update(task, completed=completed, text="  ".join(t for t in (rate, shown["text"]) if t))
        yield update
