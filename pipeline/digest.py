"""Digests of files: cheap (size and mtime) or by content; model files by their tensors.

Torch-free at import: `torch` is imported only to digest a `*.pt` file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

MODEL_SUFFIX = ".pt"


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


def content_digest(path: Path) -> str:
    """sha256 of what the file holds: for a model file (`*.pt`) its loaded tensors and values,
    because `torch.save` is not byte-stable (an identical rewrite must not read as a change);
    for every other file its bytes. A `*.pt` that does not load is digested by its bytes."""
    if Path(path).suffix == MODEL_SUFFIX:
        try:
            return tensor_digest(path)
        except ValueError:  # unreadable: its bytes still identify it (and differ)
            pass
    return sha256_of(path)


def tensor_digest(path: Path) -> str:
    """sha256 over the loaded object: dict keys in order, tensors by dtype, shape and bytes."""
    import torch

    from ..models.torchfile import safe_load
    obj = safe_load(path, ValueError, "unreadable")
    h = hashlib.sha256()
    _feed(h, obj, torch)
    return h.hexdigest()


def _feed(h, obj, torch) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)}\n".encode())
        for k, v in obj.items():  # insertion order: a state dict's order is part of it
            h.update(f"key {k!r}\n".encode())
            _feed(h, v, torch)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)}\n".encode())
        for v in obj:
            _feed(h, v, torch)
    else:  # numbers, strings, None, torch.Size ...: their repr is exact
        h.update(f"value {obj!r}\n".encode())
