"""Locks per output: readers of an output share it, its writer holds it alone.

Each output folder of a cache (`clips`, `teacher`, `student/a0.5-T4-<hash>`, ...) has an
advisory `flock` on `<cache>/locks/<output>.lock`. A command holds a **shared** lock on
every output it reads (its fresh upstream) and an **exclusive** one on the output it is
writing, so two student variants (or study seeds) train side by side on one cache while
nobody can rewrite the clips or the logits underneath them, and two writers of the same
output exclude each other. The kernel drops a lock when its holder dies (even by
`kill -9`), so a lock left by a killed process is taken over safely; a small note per
holder (`<output>.<host>-<pid>-<n>.json`: pid, host, mode, command, since) only names it in the
message a blocked process prints.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ...errors import UserError
from . import atomic

LOCKS = "locks"
POLL = 0.2  # seconds between tries while --wait lasts


class LockError(UserError, RuntimeError):
    """Another process holds an output (one line, names the holder)."""


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _alive(note: dict) -> bool:
    """False only for a note of a process on this host that is gone (killed holders leave notes)."""
    if note.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(note["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        pass
    return True


class OutputLock:
    """One output's lock file, held shared, exclusive or not at all by this process."""

    _count = 0

    def __init__(self, cache: Path, output: str, command: str):
        self.cache, self.output, self.command = Path(cache), output, command
        name = output.replace("/", "@")
        self.path = self.cache / LOCKS / f"{name}.lock"
        OutputLock._count += 1  # one note per lock object: a process may hold an output twice
        self.note = self.cache / LOCKS / f"{name}.{socket.gethostname()}-{os.getpid()}-{self._count}.json"
        self.fd: int | None = None
        self.mode: str | None = None  # "shared" | "exclusive"

    def acquire(self, exclusive: bool, wait: float) -> None:
        """Hold the lock in the given mode, trying for `wait` seconds; LockError naming the holders."""
        mode = "exclusive" if exclusive else "shared"
        if self.mode == mode:
            return
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        elif exclusive:
            # shared -> exclusive: drop ours first, else two readers upgrading at once wait on
            # each other's shared lock until both give up
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.mode = None
        deadline = time.monotonic() + wait
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            try:
                fcntl.flock(self.fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holders = self.holders()
                    self.release()
                    raise LockError(self._busy_message(exclusive, holders)) from None
                time.sleep(POLL)
        self.mode = mode
        if exclusive:  # we are alone: every other note is a dead holder's
            for other in self.path.parent.glob(self.path.stem + ".*.json"):
                if other != self.note:
                    other.unlink(missing_ok=True)
        atomic.write_json(self.note, {"pid": os.getpid(), "host": socket.gethostname(), "mode": mode,
                                      "command": self.command, "since": _now()})

    def release(self) -> None:
        if self.fd is not None:
            self.note.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd, self.mode = None, None

    def holders(self) -> list[dict]:
        notes = []
        for path in sorted(self.path.parent.glob(self.path.stem + ".*.json")):
            if path == self.note:
                continue
            try:
                note = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(note, dict) and _alive(note):
                notes.append(note)
        return sorted(notes, key=lambda n: n.get("mode") != "exclusive")  # a writer first

    def _busy_message(self, exclusive: bool, holders: list[dict]) -> str:
        if holders:
            first = holders[0]
            doing = "writing" if first.get("mode") == "exclusive" else "reading"
            who = (f"pid {first.get('pid')} on {first.get('host')} running `{first.get('command')}` "
                   f"since {first.get('since')} ({doing} it)")
            if len(holders) > 1:
                who += f" and {len(holders) - 1} more"
        else:
            who = "another process"
        return (f"cache {self.cache}: {self.output} is in use by {who}; "
                f"wait for it to finish (or pass --wait SECONDS)")


class OutputLocks:
    """The locks one command holds on a cache; `with OutputLocks(cache, wait):` releases them all.

        locks.share("clips")          # reading it: others may read too, nobody may rewrite it
        locks.exclusive("teacher")    # writing it: nobody else reads or writes it
        locks.share("teacher")        # written: downgrade, others may read it now

    Each call waits up to `wait` seconds, then raises LockError naming the holder.
    After `exclusive` returns, check again whether the output still needs writing:
    another process may have written it while this one waited.
    """

    def __init__(self, cache: Path, wait: float = 0.0, command: str | None = None):
        self.cache = Path(cache)
        self.wait = wait
        self.command = command or " ".join(["dlkdd", *sys.argv[1:]])
        self.held: dict[str, OutputLock] = {}

    def _lock(self, output: str) -> OutputLock:
        if output not in self.held:
            self.held[output] = OutputLock(self.cache, output, self.command)
        return self.held[output]

    def share(self, output: str) -> None:
        self._lock(output).acquire(exclusive=False, wait=self.wait)

    def exclusive(self, output: str) -> None:
        self._lock(output).acquire(exclusive=True, wait=self.wait)

    def release(self) -> None:
        for lock in self.held.values():
            lock.release()
        self.held.clear()

    def __enter__(self) -> OutputLocks:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
