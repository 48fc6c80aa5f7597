"""Failpoints: named places in the code where a test can stop a run at a known moment.

A test that kills, terminates or interrupts a run must land its signal inside a stage, at a
point it chose, whatever the machine's speed; waiting for a file or a line and then sleeping
a while misses on a fast machine. Code marks such places with one call:

    failpoints.reached("soft-labels:batch")

which does nothing (one environment lookup) unless the environment variable `DLKDD_FAILPOINT`
names that point. Its value is `NAME[@N][=ACTION]`:

- NAME: the point, e.g. `soft-labels:batch`, `train:step`, `write:logits.h5`;
- N: fire the N-th time this process reaches it (default 1); only that time;
- ACTION: `pause` (the default), or a signal name (`SIGINT`, `SIGTERM`, `SIGKILL`, ...) that the
  process then sends itself.

When the point fires, one line goes to stderr, `failpoint NAME@N reached (pid P)`, and with
`pause` the process blocks there until a signal comes: SIGINT and SIGTERM then do what they
would have done at that point (their handlers run; a handler that only defers the signal, as
around a checkpoint write, lets the run go on from the point), and SIGUSR1 resumes the run as
if nothing had happened. A signal whose handler is SIG_IGN leaves it paused. Only the main
thread can be resumed (signal handlers run there); a pause in another thread lasts until the
process ends. The points are listed in docs/reliability.md ("Failpoints").

For tests only: nothing in a normal run sets the variable. Engine layer: standard library only.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV = "DLKDD_FAILPOINT"
RESUME = signal.SIGUSR1  # ends a pause, the run goes on

_spec: tuple[str, tuple[str, int, str]] | None = None  # (raw value, parsed) of the variable last seen
_hits: dict[str, int] = {}  # times each point was reached under that value


def parse(value: str) -> tuple[str, int, str]:
    """(name, count, action) of a `DLKDD_FAILPOINT` value; ValueError naming the variable if malformed."""
    rest, _, action = value.strip().partition("=")
    name, at, count = rest.partition("@")
    action = action.strip() or "pause"
    try:
        n = int(count) if at else 1
    except ValueError:
        n = 0
    if not name.strip() or n < 1 or (action != "pause" and action not in signal.Signals.__members__):
        raise ValueError(f"{ENV}={value!r}: expected NAME[@N][=pause|SIGNAME] with N >= 1")
    return name.strip(), n, action


def reached(name: str) -> None:
    """The run is at point `name`: fire if `DLKDD_FAILPOINT` names it and this is the N-th time."""
    value = os.environ.get(ENV)
    if not value:
        return
    global _spec
    if _spec is None or _spec[0] != value:
        _spec = (value, parse(value))
        _hits.clear()
    target, count, action = _spec[1]
    if name != target:
        return
    _hits[name] = hit = _hits.get(name, 0) + 1
    if hit == count:
        _fire(f"{name}@{count}", action)


def _fire(point: str, action: str) -> None:
    if action != "pause":
        _announce(point)
        os.kill(os.getpid(), signal.Signals[action])
    elif threading.current_thread() is threading.main_thread():
        _pause(point)
    else:
        _announce(point)
        while True:  # no handler can be installed here: paused until the process ends
            time.sleep(0.05)


def _announce(point: str) -> None:
    # one write(2) of the whole line: ranks that share a stderr pipe (torchrun) reach a point at the
    # same moment, and print()'s text and newline could interleave with the other rank's
    line = f"failpoint {point} reached (pid {os.getpid()})\n"
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), line.encode())
    except (AttributeError, OSError, ValueError):  # a stderr with no descriptor (captured in-process)
        sys.stderr.write(line)
        sys.stderr.flush()


def _pause(point: str) -> None:
    """Announce, then sleep until a signal: SIGUSR1 resumes; SIGINT and SIGTERM go to their handlers
    and end the pause (if the handler raises, the exception leaves the point, as it would have
    there). The handlers are in place before the line is printed: a test may signal at once."""
    done = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def resume(signum, frame):
        done.append(signum)

    def forward(signum, frame):
        handler = previous[signum]
        if handler == signal.SIG_IGN:
            return  # ignored at this point: nothing happens, the pause goes on
        done.append(signum)
        if callable(handler):
            handler(signum, frame)
        else:  # the default action (or a handler not set from Python): die of the signal
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    before_resume = signal.signal(RESUME, resume)
    for s in previous:
        signal.signal(s, forward)
    try:
        _announce(point)
        while not done:
            time.sleep(0.01)
    finally:
        # A handler may have changed its own disposition (SIGTERM's ignores a second SIGTERM
        # while the run cleans up): only ours are put back.
        for s, handler in previous.items():
            if signal.getsignal(s) is forward:
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if signal.getsignal(RESUME) is resume:
            signal.signal(RESUME, before_resume if before_resume is not None else signal.SIG_DFL)
