"""Latency sampled in interleaved rounds, so noise hits every peer alike.

On a shared VM a burst of load can last longer than one peer's whole
sampling window, and sampling peers one after another lets such a burst
skew the ratio between two of them. Instead the floor's ping-pong and one
session per peer stay open together and every round takes a slice of
samples from each in turn, in an order that changes from round to round.
A peer's samples are pooled over the rounds for its median and p90; its
per-round medians are kept too, because a ratio of two peers' medians from
the same round cancels drift that lasts longer than a round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.stats import latency_summary, median

T = TypeVar("T")


def time_calls(roundtrip: Callable[[], object], n: int, budget_s: float, at_least: int) -> list[int]:
    """Nanoseconds of up to ``n`` round trips; stops early once ``budget_s`` is
    spent and ``at_least`` samples are in."""
    samples: list[int] = []
    deadline = time.perf_counter_ns() + budget_s * 1e9
    for _ in range(n):
        t0 = time.perf_counter_ns()
        roundtrip()
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
        if t1 > deadline and len(samples) >= at_least:
            break
    return samples


def round_order(items: Sequence[T], r: int) -> list[T]:
    """The order of round ``r``: rotated by ``r // 2`` and reversed in odd
    rounds, so no item always goes first or always follows the same one."""
    if not items:
        return []
    k = (r // 2) % len(items)
    order = [*items[k:], *items[:k]]
    return order[::-1] if r % 2 else order


@dataclass
class Contestant:
    """The floor or a peer session: a round trip to time, and its samples so far."""

    name: str
    roundtrip: Callable[[], object]
    per_round: int  # samples per round, unless the budget runs out first
    budget_s: float  # seconds of sampling per round
    samples: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)

    def warm_up(self, n: int) -> None:
        for _ in range(n):
            self.roundtrip()

    def take_round(self, at_least: int) -> None:
        got = time_calls(self.roundtrip, self.per_round, self.budget_s, at_least)
        self.samples += got
        self.round_medians_us.append(median(got) / 1e3)

    def summary(self) -> dict[str, Any]:
        """Median, p90 and n over all rounds, plus each round's median (us)."""
        return {**latency_summary(self.samples), "round_medians_us": self.round_medians_us}
