"""The shared fit loop: a learned kind's objective minimised on random crops of dark frames.

Fitting needs no labels and no bright references: each kind's unsupervised loss (the
zero-reference losses of Zero-DCE, SCI's self-calibrated one; see its `objective`) is
minimised on random crops of the dataset's own dark training frames.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from ..config import EnhancerConfig
from . import get


def _random_crops(frames: torch.Tensor, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """`batch` crops (uint8, B x 3 x c x c) at seeded random frames and offsets of N x 3 x H x W frames."""
    n, _, h, w = frames.shape
    ch, cw = min(crop, h), min(crop, w)
    idx = torch.randint(n, (batch,), generator=g).tolist()
    ys = torch.randint(h - ch + 1, (batch,), generator=g).tolist()
    xs = torch.randint(w - cw + 1, (batch,), generator=g).tolist()
    return torch.stack([frames[i, :, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)])


def fit(model: nn.Module, frames: np.ndarray, cfg: EnhancerConfig,
        on_step: Callable[[int, dict], None] | None = None, device: str | torch.device = "cpu") -> list[dict]:
    """Minimise the model's kind's objective on random crops of dark uint8 frames (N, H, W, 3).

    Returns one dict of floats per step (step, loss and the kind's unweighted terms); the
    model is left in eval mode. Deterministic on the CPU for a given cfg.seed.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"fit: expected uint8 frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    kind = get(model.kind)
    if not kind.learned:
        raise ValueError(f"fit: enhancer kind {kind.name!r} has no weights to fit")
    device = torch.device(device)
    data = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8 view, no copy
    g = torch.Generator().manual_seed(int(cfg.seed))
    model.to(device)
    opt, sched, loss_of = kind.objective(model, cfg)
    model.train()
    history = []
    for step in range(cfg.steps):
        loss, terms = loss_of(_random_crops(data, cfg.batch_size, cfg.crop, g).to(device).float().div_(255.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return history
