"""Console output that reads well anywhere: live bars on a terminal, plain lines in a log.

On a terminal (or in Jupyter) `progress_bar` shows a transient rich bar. When the
output is a file or a pipe (a cluster job's log, CI, `tee`) it shows nothing, and
the caller's own event lines (one per epoch, one per stage event) are the log;
`make_console` keeps those lines whole: no wrapping at 80 columns, no control codes.
A run of several stages (`RunLine`) adds one line under the stage's bar on a terminal: stage k
of n, the run's elapsed time and an ETA from the stages' own bars; in a log it adds nothing.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    the previous text (so a caller can refresh costly figures less often than the count). Under a
    `RunLine` on the same console the bar is drawn above the run's line, which reads its progress."""
    if not shows_live(console):
        yield lambda completed, text=None: None
        return
    # deferred: 0.1 s to import, and only a terminal shows a bar (logs and pipes never do)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    start, shown, line = time.perf_counter(), {"text": ""}, _LINES.get(id(console))
    # under a run line the bar is never started: the line's one live display draws it (rich < 14 allows one)
    bar = Progress(TextColumn(label, markup=False), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[text]}", markup=False), TimeRemainingColumn(),
                   console=console, transient=True, auto_refresh=line is None)
    task = bar.add_task(label, total=total, text="")

    def update(completed: int, text: str | None = None) -> None:
        if text is not None:
            shown["text"] = text
        rate = f"{completed / max(1e-9, time.perf_counter() - start):.1f} {unit}/s" if unit else ""
        bar.update(task, completed=completed, text="  ".join(t for t in (rate, shown["text"]) if t))
        if line is not None:
            line.progress(label, completed, total)
    if line is None:
        with bar:
            yield update
        return
    line.attach(bar, label, total)
    try:
        yield update
    finally:
        line.detach(bar)


_LINES: dict[int, RunLine] = {}  # id(console) -> the run line shown on it
_EPOCH = re.compile(r"^(.*?)\s*(\d+)/(\d+)$")  # a bar labelled `teacher 3/30`: part 3 of 30 of one series


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunLine:
    """One line for a run of several stages, under the running stage's own bar, on a terminal:
    `run: stage k/n <name> · <elapsed> elapsed · ETA <left>`. Nothing at all elsewhere (logs keep
    their lines).

    `stages` are those expected to run, in order; `estimates` {stage: seconds} what a stage took
    when it last ran in this cache (its record), where known. The ETA is the running stage's
    time left plus each later stage's: the running stage's from its bars (a bar labelled
    `<name> k/n`, a training epoch, counts as part k of a series of n, so validation between
    epochs is inside the pace), or its estimate; a later stage's is its estimate, or, when it has
    none (a first run), the mean time of the stages done so far, and the ETA then reads `~`.
    """

    def __init__(self, console, stages: Sequence[str], estimates: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.console, self.plan, self.clock = console, list(stages), clock
        self.estimates = {k: float(v) for k, v in (estimates or {}).items() if v}
        self.took: dict[str, float] = {}
        self.current: str | None = None
        self.started = self.stage_started = clock()
        self.series: dict | None = None  # the running stage's present bar (or run of epoch bars)
        self.bars: list = []
        self.lock = threading.Lock()
        self.live = None

    # ---- the run's events (engine.run.execute)

    def begin(self, name: str) -> None:
        with self.lock:
            if name not in self.plan:  # found stale only when it came to run (another process changed it)
                self.plan.insert(len(self.took), name)
            self.current, self.stage_started, self.series = name, self.clock(), None
        self.refresh()

    def end(self, name: str) -> None:
        with self.lock:
            self.took[name] = self.clock() - self.stage_started
            self.current, self.series = None, None

    def skip(self, name: str) -> None:
        """A stage expected to run was fresh after all (another process wrote it meanwhile)."""
        with self.lock:
            if name in self.plan and name not in self.took:
                self.plan.remove(name)

    # ---- the running stage's bars (progress_bar)

    def attach(self, bar, label: str, total: int) -> None:
        with self.lock:
            self.bars.append(bar)
        self.progress(label, 0, total)
        self.refresh()  # drawn at once: a bar that lasts less than a refresh is still seen

    def detach(self, bar) -> None:
        with self.lock:
            self.bars = [b for b in self.bars if b is not bar]

    def progress(self, label: str, completed: int, total: int) -> None:
        """A bar of the running stage moved: `completed` of `total`."""
        m = _EPOCH.match(label)
        key, part, parts = (m.group(1), int(m.group(2)), int(m.group(3))) if m else (label, 1, 1)
        done = min(1.0, max(0.0, (part - 1 + (completed / total if total else 1.0)) / max(parts, 1)))
        now = self.clock()
        with self.lock:
            if self.series is None or self.series["key"] != key or done < self.series["done"]:
                self.series = {"key": key, "since": now, "from": done, "done": done}
            self.series["done"] = done

    # ---- what the line says

    def _stage_left(self, now: float) -> tuple[float | None, bool]:
        """(seconds left of the running stage or None, whether it is a guess)."""
        s, estimate = self.series, self.estimates.get(self.current)
        by_bar = None
        if s is not None and s["done"] > s["from"]:
            by_bar = (1.0 - s["done"]) * (now - s["since"]) / (s["done"] - s["from"])
        if estimate is not None:
            return max(estimate - (now - self.stage_started), by_bar or 0.0), False
        return by_bar, True  # its bar's part is known, what it does after that part is not

    def eta(self) -> tuple[float | None, bool]:
        """(seconds left of the run, or None while nothing can tell; whether it is in part a guess)."""
        now = self.clock()
        with self.lock:
            left, guess = 0.0, False
            durations = list(self.took.values())
            if self.current is not None:
                stage_left, guess = self._stage_left(now)
                if stage_left is None:  # no bar has moved yet, and it never ran here before
                    if not durations:
                        return None, True
                    stage_left = max(0.0, sum(durations) / len(durations) - (now - self.stage_started))
                left += stage_left
                durations.append(now - self.stage_started + stage_left)
            for name in self._later():
                if name in self.estimates:
                    left += self.estimates[name]
                elif durations:
                    left += sum(durations) / len(durations)
                    guess = True
                else:
                    return None, True
            return left, guess

    def _later(self) -> list[str]:
        return [s for s in self.plan if s not in self.took and s != self.current]

    def text(self) -> str:
        with self.lock:
            later, n = self._later(), len(self.plan)
            name = self.current or (later[0] if later else None)
            k = len(self.took) + 1
            elapsed = clock_text(self.clock() - self.started)
        if name is None:
            return f"run: {n}/{n} stages done · {elapsed} elapsed"
        left, guess = self.eta()
        eta = "--:--" if left is None else ("~" if guess else "") + clock_text(left)
        return f"run: stage {k}/{n} {name} · {elapsed} elapsed · ETA {eta}"

    def __rich__(self):
        from rich.console import Group  # deferred: only a terminal shows the line
        from rich.text import Text
        with self.lock:
            bars = [b.get_renderable() for b in self.bars]
        return Group(*bars, Text(self.text(), style="bold"))

    # ---- shown while the run lasts, on a terminal only

    def refresh(self) -> None:
        if self.live is not None:
            self.live.refresh()

    def __enter__(self) -> RunLine:
        if shows_live(self.console) and id(self.console) not in _LINES:
            from rich.live import Live  # deferred: only a terminal shows the line
            self.live = Live(self, console=self.console, transient=True, refresh_per_second=4)
            self.live.start(refresh=True)
            _LINES[id(self.console)] = self
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            _LINES.pop(id(self.console), None)
            self.live.stop()
            self.live = None
