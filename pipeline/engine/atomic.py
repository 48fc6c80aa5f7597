"""Crash-safe file writes: write `<name>.tmp`, flush, fsync, then `os.replace`.

A reader therefore sees either the old whole file or the new whole file, never
a torn one, even after `kill -9` or power loss in the middle of a write.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from . import failpoints


def tmp_path(path: Path) -> Path:
    """The temporary sibling a writer fills before renaming it onto `path`."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit(tmp: Path, path: Path) -> None:
    """fsync `tmp`, rename it onto `path` and fsync the directory so the rename survives a crash."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    failpoints.reached(f"write:{Path(path).name}")  # tests: a stop just before the rename
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def remove_orphans(directory: Path) -> list[Path]:
    """Delete `*.<pid>.tmp` files under `directory` whose writer is dead (left by kill -9 or a crash).

    Files of live processes (other ranks of a torchrun job) are left alone.
    """
    removed = []
    for path in Path(directory).rglob("*.tmp"):
        parts = path.name.rsplit(".", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
