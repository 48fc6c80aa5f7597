"""SIGTERM handled like Ctrl-C: the one place a stop signal becomes an exception.

Schedulers (SLURM at its time limit or on preemption, Kubernetes, `timeout`, torchrun
stopping the survivors of a failed rank) send SIGTERM and then SIGKILL after a grace
period. Python's default for SIGTERM is to die on the spot: no `finally`, so dask
clusters and DataLoader workers are orphaned and nothing says what was kept. Here it
raises `Terminated`, a KeyboardInterrupt, so every stage's existing Ctrl-C path runs
(the dask cluster closed, workers joined, "... kept; the rerun resumes" printed) and
the CLI exits 143 (128 + 15) instead of 130.

A checkpoint write in progress when the signal comes is finished first (`deferred`):
it takes well under a second for the models here, far inside any grace period, and
it is the state the rerun resumes from. A training stage does not save a checkpoint
of a half-done epoch: resuming mid-epoch would need the position in the epoch's
seeded order and every DataLoader worker's RNG to end bit-identical, so it keeps the
last finished epoch's checkpoint instead.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like Ctrl-C, exit 143."""

    exit_code = 143
    what = "terminated (SIGTERM)"


def exit_code(e: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C (the shell's 128 + signal number)."""
    return getattr(e, "exit_code", 130)


def describe(e: KeyboardInterrupt) -> str:
    return getattr(e, "what", "interrupted")


_pending: list[int] = []  # signals that arrived inside `deferred`
_deferring = 0


def _on_sigterm(signum, frame):
    global _deferring
    if _deferring:
        _pending.append(signum)
        return
    # A second SIGTERM during the clean-up must not interrupt it: the scheduler's SIGKILL
    # after its grace period is the way to stop a clean-up that hangs.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    quiet_helper_threads()
    raise Terminated()


def quiet_helper_threads() -> None:
    """This process is stopping (SIGTERM or Ctrl-C), and its DataLoader workers stop with it: a
    worker gone mid-handshake makes multiprocessing's file-descriptor sharing thread print a
    ConnectionResetError traceback through `sys.excepthook` (seen once in six stops). That is part
    of the stop, not an error: from now on this process drops connection errors of helper threads."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if threading.current_thread() is threading.main_thread() or not issubclass(kind, (ConnectionError,
                                                                                          EOFError)):
            previous(kind, value, tb)
    sys.excepthook = hook


def _raise_again(unraisable) -> None:
    """`sys.unraisablehook` while SIGTERM is handled: a `Terminated` (SIGTERM) or KeyboardInterrupt
    (Ctrl-C) raised while a finalizer or a weakref callback ran is ignored by Python (it prints
    "Exception ignored in ..." and goes on), so the stop would be lost. Re-arm the handler and send
    the signal again a moment later, once the callback has returned, so it raises where it can
    propagate."""
    stop = unraisable.exc_value
    if isinstance(stop, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        if isinstance(stop, Terminated):
            signal.signal(signal.SIGTERM, _on_sigterm)
        again = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        threading.Timer(0.01, os.kill, (os.getpid(), again)).start()
        return
    sys.__unraisablehook__(unraisable)


@contextmanager
def handled():
    """While the block runs, SIGTERM raises `Terminated` (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_hook, sys.unraisablehook = sys.unraisablehook, _raise_again
    excepthook = sys.excepthook
    try:
        yield
    finally:  # an in-process caller (a test, a notebook) gets its own handlers back
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook, sys.excepthook = previous_hook, excepthook


def stopping() -> None:
    """This process is already stopping with its own message: a SIGTERM now (torchrun stopping the
    survivors of a dead rank) must not cut that message short."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def deferred():
    """Hold SIGTERM back while the block runs (a checkpoint being written); raise it afterwards."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        _pending.clear()
        _on_sigterm(signal.SIGTERM, None)
