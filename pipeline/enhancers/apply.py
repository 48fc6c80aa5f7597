"""`enhance_frames`, the hot path of the `enhance` stage: uint8 frames through any enhancer.

It reads the enhancer protocol of `models.zero_dce` (`enhance`, and `enhance_uint8` for a
table lookup), not the kind, so a wrapped module (a benchmark's variant) runs as it is.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..training.device import autocast


def enhance_frames(module: nn.Module, frames_uint8: np.ndarray, batch: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Enhance uint8 frames (N, H, W, 3) in batches; returns uint8 of the same shape."""
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"enhance_frames: expected uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    device = torch.device(device)
    out = np.empty_like(frames)
    module.to(device).eval()
    lut = getattr(module, "enhance_uint8", None)
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            if lut is not None:  # gamma / identity: a table lookup, no float round trip
                y = lut(chunk)
            else:
                x = chunk.permute(0, 3, 1, 2).float().div_(255.0)
                with autocast(device, torch.float16):
                    e = module.enhance(x)
                y = e.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            out[start:start + batch] = y.cpu().numpy()
    return out
