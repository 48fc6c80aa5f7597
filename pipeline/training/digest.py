"""Content digests for the stage records: a model file by its tensors, any other file by its bytes.

`torch.save` is not byte-stable (an identical rewrite must not read as a change), so a `*.pt`
output is digested over its loaded tensors and values. Torch-free at import: `dlkdd status`
loads torch only when it must digest a model file (--verify, --checksum).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..engine.digest import sha256_of

MODEL_SUFFIX = ".pt"


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
    import torch  # deferred: this module is imported by the torch-free stage table

    from ...models.torchfile import safe_load
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
