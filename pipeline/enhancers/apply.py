"""`enhance_frames`, the hot path of the `enhance` stage: uint8 frames through any enhancer.

It reads the enhancer protocol of `models.zero_dce` (`enhance`, and `enhance_uint8` for a
table lookup), not the kind, so a wrapped module (a benchmark's variant) runs as it is.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..training.device import exact_float32

# enhance.precision -> the dtype the enhancer computes in, on every device alike (no autocast: its
# per-op casting policy differs between CPU and CUDA, and the shards must not depend on the device)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def enhance_frames(module: nn.Module, frames_uint8: np.ndarray, batch: int = 64,
                   device: str | torch.device = "cpu", precision: str = "fp32") -> np.ndarray:
    """Enhance uint8 frames (N, H, W, 3) in batches, computing in `precision`; returns uint8 of the
    same shape."""
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"enhance_frames: expected uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    device, dtype = torch.device(device), DTYPES[precision]
    out = np.empty_like(frames)
    module.to(device, dtype).eval()
    lut = getattr(module, "enhance_uint8", None)
    with torch.inference_mode(), exact_float32():
        for start in range(0, len(frames), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            if lut is not None:  # gamma / identity: a table lookup, no float round trip
                y = lut(chunk)
            else:
                x = chunk.permute(0, 3, 1, 2).float().div_(255.0).to(dtype)
                y = module.enhance(x).float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            out[start:start + batch] = y.cpu().numpy()
    return out
