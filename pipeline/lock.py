"""One writer per cache: an advisory `flock` on `<cache>/.lock`.

The kernel drops the lock when its holder dies (even by `kill -9`), so a lock
left by a killed process is taken over safely; the file's text only names the
holder (pid, host, command, since when) for the message a second process sees.
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

from ..errors import UserError


class LockError(UserError, RuntimeError):
    """Another process holds the cache (one line, names the holder)."""


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']} running `{info['command']}` "
                f"since {info['since']}")
    except (OSError, ValueError, KeyError):
        return "another process"


class CacheLock:
    """`with CacheLock(cache, wait=0):` holds the cache or raises LockError naming the holder."""

    def __init__(self, cache: Path, wait: float = 0.0, command: str | None = None):
        self.path = Path(cache) / ".lock"
        self.wait = wait
        self.command = command or " ".join(["dlkdd", *sys.argv[1:]])
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockError(f"cache {self.path.parent} is in use by {_holder_text(self.path)}; "
                                    f"wait for it to finish (or pass --wait SECONDS)") from None
                time.sleep(0.2)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "CacheLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
