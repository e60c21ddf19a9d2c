"""Timing helpers shared by the benchmarks: one way to take a best-of and a p50/p99.

The standard library's ``timeit`` repeats a statement but returns neither the callable's result
nor percentiles, which these benchmarks report; hence these few lines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``(fn(), seconds)`` for one call."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def best_of(n: int, fn: Callable[[], object]) -> float:
    """The fastest of ``n`` calls, in seconds (the machine is shared: the minimum is the signal)."""
    return min(timed(fn)[1] for _ in range(n))


def percentiles_ms(fn: Callable[[], object], calls: int, warmup: int) -> tuple[float, float]:
    """``(p50, p99)`` milliseconds of ``fn`` over ``calls`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = sorted(timed(fn)[1] * 1000.0 for _ in range(calls))
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]
