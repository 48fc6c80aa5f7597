"""The statistics of a study: mean +- sd over seeds, the paired t-interval of a difference by seed,
a paired bootstrap over test videos (conditional on the seeds drawn), the two-level bootstrap over
seeds and test videos (the headline interval), and the Pearson correlation of two per-seed series.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP = 2000  # resamples (of the test videos; of the seeds, then their videos)
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


def two_level_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Percentile 95 % interval of mean-over-seeds (b - a) top-1 (points) when the seeds are resampled
    with replacement and then, within each resampled seed, the test videos are too.

    hits_*: (seeds, videos) 0/1, the same videos in the same order for every seed and model. The
    resample is paired: a seed's baseline and student see the same resampled videos, so only the
    per-video difference b - a of each seed matters, and drawing its V videos with replacement is
    drawing multinomial counts of that seed's distinct differences (-1, 0, +1): the same distribution
    as drawing V video indices, at the cost of the distinct values instead of the videos.

    Unlike `paired_bootstrap` this counts the seed-to-seed variation (a new seed is a new draw of
    every model the study reseeds), not only which videos the test split holds. The video noise is
    counted twice (in the spread of the seed means and again in the video resample), so the interval
    is a little conservative: its variance is (var(seed means, ddof 0) + mean within-seed var / V) / S.
    """
    d = np.asarray(hits_b, dtype=np.float64) - np.asarray(hits_a, dtype=np.float64)
    S, V = d.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, S, size=(n, S))  # which seed fills each slot of each resample
    slot_means = np.empty((n, S))
    for s in range(S):
        values, counts = np.unique(d[s], return_counts=True)
        where = picks == s
        drawn = rng.multinomial(V, counts / V, size=int(where.sum()))  # (slots, distinct values)
        slot_means[where] = drawn @ values / V
    diff = 100.0 * slot_means.mean(axis=1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"mean": 100.0 * float(d.mean()), "ci95": [float(lo), float(hi)],
            "p_le_0": float((diff <= 0).mean()), "resamples": n, "seeds": S, "videos": V}


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation of two paired series (None with fewer than 3 pairs or a constant series)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3:
        return None
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else None
