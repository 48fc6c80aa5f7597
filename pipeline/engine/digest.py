"""Digests of files: cheap (size and mtime) or by their bytes.

What a file's content is for the records (a model file by its tensors) is the stage table's
to say: `Graph` takes a `digest` function (see `pipeline.training.digest`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def stat_of(path: Path) -> dict:
    """{"size", "mtime_ns"} of a file, or {"missing": True}."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return {"missing": True}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path, checksum: bool = False) -> str:
    """size:mtime (cheap) or sha256 of the content (--checksum); "missing" when absent."""
    st = stat_of(path)
    if st.get("missing"):
        return "missing"
    return sha256_of(path) if checksum else f"{st['size']}:{st['mtime_ns']}"
