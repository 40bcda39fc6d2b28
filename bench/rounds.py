"""Latency and throughput sampled in interleaved rounds, so noise hits every peer alike.

On a shared VM a burst of load can last longer than one peer's whole
sampling window, and measuring peers one after another lets such a burst
skew the ratio between two of them. Instead every contestant (the floor's
ping-pong, one session per peer) stays open at once and every round takes
a slice from each in turn, in an order that changes from round to round
(:func:`round_order`). Only one contestant is busy at a time. A figure
pools all of a contestant's rounds; its per-round figures are kept too,
because a ratio of two contestants' figures from the same round cancels
drift that lasts longer than a round.

Two kinds of contestant share that machinery (the loop that plays the
rounds is :meth:`bench.runner.Runner._play`):

* :class:`LatencyContestant`: a slice of round trips per round; median and
  p90 pool every sample, and each round's median is kept.
* :class:`ThroughputContestant`: each map variant of a peer's session a few
  times per round, on a task count fixed after its warm-up; tasks/s is the count
  over the median of the per-round times, and each round's rate is kept.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.config import Sizes
from bench.peers import Session, Skip
from bench.stats import latency_summary, median
from bench.tasks import inc

T = TypeVar("T")


def round_order(items: Sequence[T], r: int) -> list[T]:
    """The order of round ``r``: rotated by ``r // 2`` and reversed in odd
    rounds, so no item always goes first or always follows the same one."""
    if not items:
        return []
    k = (r // 2) % len(items)
    order = [*items[k:], *items[:k]]
    return order[::-1] if r % 2 else order


class Contestant(ABC):
    """Something sampled once per round; ``name`` is its cell in the results."""

    name: str

    @abstractmethod
    def take_round(self, r: int) -> None:
        """Take round ``r``'s slice of samples; raising drops the contestant."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """The JSON-ready cell pooling every round."""


# -- latency ----------------------------------------------------------------------


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


@dataclass
class LatencyContestant(Contestant):
    """The floor or a peer session: a round trip to time, and its samples so far."""

    name: str
    roundtrip: Callable[[], object]
    per_round: int  # samples per round, unless the budget runs out first
    budget_s: float  # seconds of sampling per round
    at_least: int  # samples per round even past the budget
    samples: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)

    def warm_up(self, n: int) -> None:
        for _ in range(n):
            self.roundtrip()

    def take_round(self, r: int) -> None:
        got = time_calls(self.roundtrip, self.per_round, self.budget_s, self.at_least)
        self.samples += got
        self.round_medians_us.append(median(got) / 1e3)

    def summary(self) -> dict[str, Any]:
        """Median, p90 and n over all rounds, plus each round's median (us)."""
        return {**latency_summary(self.samples), "round_medians_us": self.round_medians_us}


# -- throughput -------------------------------------------------------------------


@dataclass
class MapVariant:
    """One batching of a peer's map, its task count, and the times of its maps, by round."""

    label: str
    param: Any
    tasks: int
    rounds: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """tasks/s over the median of every timed map; each round's rate over its own median."""
        every = [t for times in self.rounds for t in times]
        t = median(every)
        return {
            "tasks_per_s": self.tasks / t,
            "seconds": t,
            "tasks": self.tasks,
            "repeats": len(every),
            "round_tasks_per_s": [self.tasks / median(times) for times in self.rounds],
        }


def warm_up_variant(session: Session, sizes: Sizes, label: str, param: Any) -> MapVariant:
    """Warm a variant up and fix its task count for every round.

    Two maps on 1 % of the tasks (the first also ships the function) give a
    first estimate of its rate; that understates fast variants, whose fixed
    cost dominates so small a map, so where a full map looks affordable one
    is timed too and its rate is the one used. A variant that would spend
    more than ``sizes.throughput_budget_s`` over all its rounds' maps on the
    full count maps fewer tasks (never fewer than the warm-up's), so slow
    variants cannot dominate the run. The last warm-up map is on the chosen
    count: a first large batch can cost what small ones do not (a clustercore
    worker, for one, imports cloudpickle only when a message first needs it).
    """
    warm = list(range(max(100, sizes.tasks // 100)))
    session.map(inc, warm, param)
    rate = len(warm) / _timed_map(session, warm, param)
    per_map_s = sizes.throughput_budget_s / (sizes.throughput_rounds * sizes.throughput_maps_per_round)
    n = sizes.tasks
    if n / rate <= 10 * per_map_s:  # affordable: measure the full count itself
        _timed_map(session, list(range(n)), param)  # the first large map, untimed
        rate = n / _timed_map(session, list(range(n)), param)
    if n / rate > per_map_s:
        n = max(len(warm), int(rate * per_map_s))
        session.map(inc, list(range(n)), param)
    return MapVariant(label, param, n)


def _timed_map(session: Session, xs: list[int], param: Any) -> float:
    t0 = time.perf_counter()
    session.map(inc, xs, param)
    return time.perf_counter() - t0


@dataclass
class ThroughputContestant(Contestant):
    """A peer session and its map variants; each round maps every variant a few times
    back to back (one fast map takes a few ms: too short a sample on its own)."""

    name: str
    session: Session
    variants: list[MapVariant]
    skipped: dict[str, str]  # label -> why (a Skip during warm-up)
    labels: list[str]  # every variant in the session's order, for the report
    maps_per_round: int

    @classmethod
    def warmed_up(cls, name: str, session: Session, sizes: Sizes) -> ThroughputContestant:
        variants, skipped = [], {}
        for label, param in session.map_variants:
            try:
                variants.append(warm_up_variant(session, sizes, label, param))
            except Skip as e:
                skipped[label] = str(e)
        labels = [label for label, _ in session.map_variants]
        return cls(name, session, variants, skipped, labels, sizes.throughput_maps_per_round)

    def take_round(self, r: int) -> None:
        for v in round_order(self.variants, r):
            xs = list(range(v.tasks))
            expected = [x + 1 for x in xs]
            times = []
            for _ in range(self.maps_per_round):
                t0 = time.perf_counter()
                got = self.session.map(inc, xs, v.param)
                times.append(time.perf_counter() - t0)
                if got != expected:
                    raise AssertionError(f"{v.label}: map returned wrong results")
            v.rounds.append(times)

    def summary(self) -> dict[str, Any]:
        """Per variant: tasks/s (tasks / median time), and each round's rate."""
        timed = {v.label: v for v in self.variants}
        return {
            label: timed[label].summary() if label in timed else {"skipped": self.skipped[label]}
            for label in self.labels
        }
