"""`enhance_frames`, the hot path of the `enhance` stage: uint8 frames through any enhancer.

It reads the enhancer protocol of `models.zero_dce` (`enhance`, and `enhance_uint8` for a
table lookup), not the kind, so a wrapped module (a benchmark's variant) runs as it is.

`frames_per_batch` resolves `enhance.batch_frames = "auto"`: 8 frames on a CPU (larger batches
thrash its caches: benchmarks/enhance.py), and on CUDA as many as a share of the device's memory
holds, from one probe of what a frame costs there. A batch that still runs out of memory (another
process took the device's memory) is halved and retried, with one line saying so.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn as nn

from ..training.device import exact_float32

# enhance.precision -> the dtype the enhancer computes in, on every device alike (no autocast: its
# per-op casting policy differs between CPU and CUDA, and the shards must not depend on the device)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

AUTO = "auto"
CPU_BATCH_FRAMES = 8  # measured: larger batches are slower on a CPU (the old fixed default)
MEMORY_SHARE = 0.25  # of the device's total memory, for one batch's activations (the rest: other work)
MAX_BATCH_FRAMES = 1024  # past this a batch gains nothing and delays the first shard
PROBE_FRAMES = 4


def frames_that_fit(total_bytes: int, per_frame_bytes: float, share: float = MEMORY_SHARE,
                    cap: int = MAX_BATCH_FRAMES) -> int:
    """Frames per batch whose activations take at most `share` of `total_bytes`: a multiple of 8
    where 8 or more fit, at least 1, at most `cap`."""
    n = int(total_bytes * share // max(per_frame_bytes, 1.0))
    if n >= 8:
        n -= n % 8
    return max(1, min(cap, n))


def probe_frame_bytes(module: nn.Module, frame_shape: tuple[int, int], device: torch.device,
                      precision: str = "fp32") -> float:
    """Peak CUDA memory one frame of (H, W) takes through `module.enhance` (a batch of
    PROBE_FRAMES, its peak over what was allocated before, divided out: overheads count, which
    errs towards smaller batches)."""
    dtype = DTYPES[precision]
    module.to(device, dtype).eval()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), exact_float32():
        x = torch.zeros(PROBE_FRAMES, 3, *frame_shape, device=device, dtype=dtype)
        module.enhance(x)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / PROBE_FRAMES


def frames_per_batch(module: nn.Module, frame_shape: tuple[int, int], device: str | torch.device,
                     setting: str | int = AUTO, precision: str = "fp32") -> int:
    """`enhance.batch_frames`: a number as it is; auto: CPU_BATCH_FRAMES off CUDA, on CUDA the frames
    that MEMORY_SHARE of the device's total memory holds (total, not free: the same batch on every
    run on one kind of device). A table-lookup enhancer (gamma) needs no probe."""
    if setting != AUTO:
        return int(setting)
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH_FRAMES
    if getattr(module, "enhance_uint8", None) is not None:
        per_frame = 4.0 * 3 * frame_shape[0] * frame_shape[1]  # the uint8 frame in and out
    else:
        per_frame = probe_frame_bytes(module, frame_shape, device, precision)
    total = torch.cuda.get_device_properties(device).total_memory
    return frames_that_fit(total, per_frame)


def enhance_frames(module: nn.Module, frames_uint8: np.ndarray, batch: int = 64,
                   device: str | torch.device = "cpu", precision: str = "fp32") -> np.ndarray:
    """Enhance uint8 frames (N, H, W, 3) in batches, computing in `precision`; returns uint8 of the
    same shape. A batch that runs out of device memory is halved and retried from where it was."""
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"enhance_frames: expected uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    device, dtype = torch.device(device), DTYPES[precision]
    out = np.empty_like(frames)
    module.to(device, dtype).eval()
    lut = getattr(module, "enhance_uint8", None)
    start = 0
    with torch.inference_mode(), exact_float32():
        while start < len(frames):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            try:
                if lut is not None:  # gamma / identity: a table lookup, no float round trip
                    y = lut(chunk)
                else:
                    x = chunk.permute(0, 3, 1, 2).float().div_(255.0).to(dtype)
                    y = module.enhance(x).float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
                    y = y.permute(0, 2, 3, 1)
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                del chunk
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                print(f"  enhance: out of device memory; {batch} frames per batch from now on", file=sys.stderr)
                continue
            out[start:start + len(y)] = y.cpu().numpy()
            start += len(y)
    return out
