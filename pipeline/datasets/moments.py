"""Clip statistics: each clip's per-channel moments, and the per-stream mean/std that standardise
the models' inputs, pooled over the train clips only.

Torch loads on first use: the enhance stage starts a dask cluster before this process loads torch.
"""
from __future__ import annotations

import numpy as np


def channel_moments(clip: np.ndarray) -> list[float]:
    """[mean r, g, b, mean of squares r, g, b] of a uint8 (T, H, W, 3) clip, in [0, 1] pixel units.

    Exact sums (float64 accumulation of integer values and squares, each exact in float32),
    without a float64 copy of the clip: that copy cost as much as enhancing it with SCI."""
    import torch  # deferred: the enhance stage starts its cluster before this process loads torch
    x = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.uint8)).reshape(-1, 3).float()
    n = max(1, x.shape[0])
    s1 = x.sum(0, dtype=torch.float64).numpy()
    s2 = (x * x).sum(0, dtype=torch.float64).numpy()
    return [*(s1 / (n * 255.0)).tolist(), *(s2 / (n * 255.0 * 255.0)).tolist()]


def input_statistics(clips: list[dict]) -> dict:
    """Per-stream {"mean": [r, g, b], "std": [r, g, b]} over the TRAIN clips (every clip has T x H x W
    pixels, so the pooled moments are plain averages); validation and test never contribute."""
    train = [c["moments"] for c in clips if c["split"] == "train"]
    stats = {}
    for w in ("original", "enhanced"):
        m = np.array([t[w] for t in train], dtype=np.float64).mean(axis=0) if train else np.zeros(6)
        mean, sq = m[:3], m[3:]
        std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
        stats[w] = {"mean": [round(float(v), 6) for v in mean],
                    "std": [round(float(max(v, 1e-3)), 6) for v in std]}  # a flat channel must not divide by 0
    return stats
