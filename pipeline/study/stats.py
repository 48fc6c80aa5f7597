"""The statistics of a study: mean +- sd over seeds, the paired t-interval of a difference by seed,
and a paired bootstrap over test videos.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP = 2000  # resamples of the test videos
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,  # df 1..10
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,  # df 11..20
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # df 21..30


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def t_interval(diffs: list[float]) -> tuple[float, list[float | None]]:
    """Mean and 95 % t-interval of paired differences (None bounds with fewer than 2 seeds)."""
    d = np.asarray(diffs, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, [None, None]
    t = T975[len(d) - 2] if len(d) - 1 <= len(T975) else 1.96
    half = t * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, [mean - half, mean + half]


def paired_difference(a: list[float], b: list[float]) -> dict:
    """b - a paired by position: its mean and 95 % t-interval, rounded to 4 decimals."""
    mean, ci = t_interval([y - x for x, y in zip(a, b)])
    return {"mean": round(mean, 4), "ci95": [None if c is None else round(c, 4) for c in ci]}


def paired_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Percentile 95 % interval of mean-over-seeds (b - a) top-1 when the test videos are resampled.

    hits_*: (seeds, videos) 0/1, the same videos in the same order for every seed and model.
    """
    rng = np.random.default_rng(seed)
    V = hits_a.shape[1]
    picks = rng.integers(0, V, size=(n, V))
    diff = 100.0 * (hits_b[:, picks].mean(axis=2) - hits_a[:, picks].mean(axis=2)).mean(axis=0)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"mean": 100.0 * float((hits_b - hits_a).mean()), "ci95": [float(lo), float(hi)],
            "p_le_0": float((diff <= 0).mean()), "resamples": n, "videos": V}
