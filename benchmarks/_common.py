"""Helpers shared by the benchmark scripts: interleaved timing, verdicts and markdown tables.

On a small shared machine the load of other work comes and goes within seconds, so
a benchmark times our way and the baseline *interleaved*, round after round, in
one process, and compares the best round of each (the least disturbed) as well as
the median of the per-round ratios (how much the noise moved it).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(variants: dict[str, Callable[[], object]], rounds: int,
                repeat: dict[str, int] | None = None, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each call, variants taking turns within every round: {name: [s, s, ...]}."""
    repeat = repeat or {}
    if warmup:  # first-call allocations and lazy initialisation out of every timing
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(repeat.get(name, 1)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def speedup(fast: list[float], slow: list[float]) -> tuple[float, float]:
    """(best slow / best fast, median over rounds of slow / fast): how many times faster `fast` is."""
    best = min(slow) / min(fast)
    per_round = [s / f for s, f in zip(slow, fast)]
    return best, statistics.median(per_round)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |",
                      *[line(r) for r in cells[1:]]])
