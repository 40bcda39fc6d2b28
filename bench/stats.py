"""Small statistics and timing helpers shared by the measurements."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    s = sorted(xs)
    if not s:
        raise ValueError("no samples")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return float(s[k])


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median and p90 of round-trip samples, in microseconds."""
    us = [s / 1e3 for s in samples_ns]
    return {"median_us": median(us), "p90_us": percentile(us, 90), "n": len(us)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
