"""A study's statistics on planted data: the two-level bootstrap (seeds, then videos) recovers the
interval width the planted seed-to-seed and per-video variation imply, and is wider than the video
bootstrap when the seeds differ."""
from __future__ import annotations

import numpy as np
import pytest

from dlkdd.pipeline.study.stats import paired_bootstrap, pearson, two_level_bootstrap

Z975 = 1.959964


def _planted(rng, seeds: int, videos: int, mean: float, sd_seed: float, p_base: float = 0.5):
    """(baseline, student) 0/1 hits: per seed a true difference drawn N(mean, sd_seed) in points,
    each video an independent Bernoulli at the seed's rate."""
    delta = rng.normal(mean, sd_seed, size=seeds) / 100.0
    base = (rng.random((seeds, videos)) < p_base).astype(np.int8)
    student = (rng.random((seeds, videos)) < (p_base + delta)[:, None]).astype(np.int8)
    return base, student, delta


def _width(boot: dict) -> float:
    lo, hi = boot["ci95"]
    return hi - lo


def test_two_level_bootstrap_recovers_the_planted_interval_width():
    rng = np.random.default_rng(1)
    S, V, sd_seed = 200, 2000, 4.0
    base, student, delta = _planted(rng, S, V, mean=3.0, sd_seed=sd_seed)
    boot = two_level_bootstrap(base, student, n=4000, seed=0)
    assert boot["seeds"] == S and boot["videos"] == V and boot["resamples"] == 4000
    assert boot["mean"] == pytest.approx(100.0 * (student.mean() - base.mean()))
    # the truth: var(mean) = (sd_seed^2 + within-seed var / V) / S, within var of a 0/1 difference
    # p_b (1 - p_b) + p_s (1 - p_s) per video, in points^2
    p_s = 0.5 + delta
    within = 1e4 * (0.25 + np.mean(p_s * (1 - p_s)))
    analytic = 2 * Z975 * np.sqrt((sd_seed ** 2 + within / V) / S)
    assert _width(boot) == pytest.approx(analytic, rel=0.1)
    lo, hi = boot["ci95"]
    assert lo < 3.0 < hi and boot["p_le_0"] == 0.0  # +3 points planted, ~0.3 points of sd


def test_two_level_bootstrap_width_is_the_exact_resampling_variance():
    """On any data the two-level resample's variance is (var of the seed means + mean within-seed
    variance / V) / S (both ddof 0): its interval is 2 z sd of that, up to resampling noise."""
    rng = np.random.default_rng(2)
    base, student, _ = _planted(rng, 30, 150, mean=5.0, sd_seed=6.0, p_base=0.4)
    d = 100.0 * (student.astype(float) - base)
    exact = np.sqrt((d.mean(axis=1).var() + d.var(axis=1).mean() / d.shape[1]) / d.shape[0])
    boot = two_level_bootstrap(base, student, n=8000, seed=3)
    assert _width(boot) == pytest.approx(2 * Z975 * exact, rel=0.06)
    again = two_level_bootstrap(base, student, n=8000, seed=3)
    assert again == boot  # a fixed seed gives the same interval


def test_two_level_bootstrap_matches_resampling_video_indices():
    """The multinomial shortcut draws what resampling V video indices per drawn seed draws."""
    rng = np.random.default_rng(9)
    base, student, _ = _planted(rng, 6, 80, mean=3.0, sd_seed=5.0)
    d = student.astype(float) - base
    n = 20000
    seeds = rng.integers(0, 6, size=(n, 6))
    videos = rng.integers(0, 80, size=(n, 6, 80))
    naive = 100.0 * d[seeds[..., None], videos].mean(axis=(1, 2))
    boot = two_level_bootstrap(base, student, n=n)
    assert boot["ci95"] == pytest.approx(list(np.percentile(naive, [2.5, 97.5])), abs=0.75)  # 1/80 = 1.25 pt
    assert boot["p_le_0"] == pytest.approx(float((naive <= 0).mean()), abs=0.01)


def test_two_level_bootstrap_is_wider_than_the_video_bootstrap_when_seeds_vary():
    rng = np.random.default_rng(4)
    base, student, _ = _planted(rng, 10, 300, mean=2.0, sd_seed=8.0)
    two = two_level_bootstrap(base, student, n=2000)
    one = paired_bootstrap(base, student, n=2000)
    assert two["mean"] == pytest.approx(one["mean"])
    # one-level: only the video noise of the seeds' mean, ~sqrt(5000 / (10 * 300)) = 1.3 points of sd;
    # two-level adds the planted 8-point seed sd / sqrt(10): ~2.8 points
    assert _width(one) < 0.65 * _width(two)
    # no seed variation planted: the video noise alone, which the two-level resample counts twice
    base, student, _ = _planted(rng, 10, 300, mean=2.0, sd_seed=0.0)
    two, one = two_level_bootstrap(base, student, n=2000), paired_bootstrap(base, student, n=2000)
    assert 1.1 < _width(two) / _width(one) < 1.8  # ~sqrt(2)


def test_two_level_bootstrap_edge_cases():
    a = np.zeros((3, 40), dtype=np.int8)
    same = two_level_bootstrap(a, a)
    assert same["mean"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["p_le_0"] == 1.0
    better = two_level_bootstrap(a, np.ones_like(a))
    assert better["ci95"] == [100.0, 100.0] and better["p_le_0"] == 0.0
    rng = np.random.default_rng(5)
    one_seed = (rng.random((1, 200)) < 0.5), (rng.random((1, 200)) < 0.6)
    boot = two_level_bootstrap(*one_seed)
    assert boot["seeds"] == 1 and boot["ci95"][0] < boot["mean"] < boot["ci95"][1]  # the videos alone


def test_pearson():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert pearson(x, [2 * v + 1 for v in x]) == pytest.approx(1.0)
    assert pearson(x, [-v for v in x]) == pytest.approx(-1.0)
    y = [0.3, -1.2, 2.2, 0.1, 1.7]
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert pearson([1.0, 2.0], [3.0, 1.0]) is None  # two points always lie on a line
    assert pearson(x, [1.0] * 5) is None
