"""The four measurements, each run on one peer session (or peer).

Every function returns a plain dict (JSON-ready). Timing uses
``time.perf_counter``; figures are medians over repeats after warm-ups.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.config import Sizes
from bench.peers import Peer, Session, Skip
from bench.stats import latency_summary, median
from bench.tasks import identity, inc, noop


def latency(session: Session, sizes: Sizes) -> dict[str, Any]:
    """Round trip of a no-op call: median and p90 in microseconds.

    A slow peer stops after ``sizes.latency_budget_s`` seconds of sampling
    (with at least 50 samples), so it does not dominate the run.
    """
    for _ in range(sizes.latency_warmup):
        session.call(noop)
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(sizes.latency_budget_s * 1e9)
    for _ in range(sizes.latency_calls):
        t0 = time.perf_counter_ns()
        session.call(noop)
        t1 = time.perf_counter_ns()
        samples.append(t1 - t0)
        if t1 > deadline and len(samples) >= 50:
            break
    return latency_summary(samples)


def throughput(session: Session, sizes: Sizes) -> dict[str, Any]:
    """Tasks per second mapping ``x + 1`` over ``sizes.tasks`` ints, per batching.

    Two warm-ups on 1 % of the tasks; the second estimates the rate; a variant slow enough
    that one full run would pass ``sizes.throughput_budget_s`` runs once, on
    fewer tasks (never under 1,000), and the table says how many.
    """
    out: dict[str, Any] = {}
    for label, param in session.map_variants:
        try:
            out[label] = _throughput_variant(session, sizes, param)
        except Skip as e:
            out[label] = {"skipped": str(e)}
    return out


def _throughput_variant(session: Session, sizes: Sizes, param: Any) -> dict[str, Any]:
    warm = list(range(max(100, sizes.tasks // 100)))
    session.map(inc, warm, param)  # the first pass also ships the function
    t0 = time.perf_counter()
    session.map(inc, warm, param)
    rate = len(warm) / (time.perf_counter() - t0)
    n, repeats = sizes.tasks, sizes.throughput_repeats
    if n / rate > sizes.throughput_budget_s:
        n = min(n, max(1000, int(rate * sizes.throughput_budget_s)))
        repeats = 1
    xs = list(range(n))
    expected = [x + 1 for x in xs]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        got = session.map(inc, xs, param)
        times.append(time.perf_counter() - t0)
        if got != expected:
            raise AssertionError("map returned wrong results")
    t = median(times)
    return {"tasks_per_s": n / t, "seconds": t, "tasks": n, "repeats": repeats}


def make_array(nbytes: int) -> np.ndarray:
    """Incompressible float64 data of ``nbytes`` bytes."""
    return np.random.default_rng(0).random(nbytes // 8)


def bandwidth(session: Session, sizes: Sizes) -> dict[str, Any]:
    """GB/s of a numpy array echoed through a worker: 2 * nbytes / round trip."""
    arr = make_array(sizes.bandwidth_bytes)
    back = session.call(identity, arr)
    if not np.array_equal(back, arr):
        raise AssertionError("echo returned a different array")
    del back
    for _ in range(sizes.bandwidth_warmup):
        session.call(identity, arr)
    times = []
    for _ in range(sizes.bandwidth_repeats):
        t0 = time.perf_counter()
        session.call(identity, arr)
        times.append(time.perf_counter() - t0)
    t = median(times)
    return {"gbps": 2 * arr.nbytes / t / 1e9, "seconds": t, "bytes": arr.nbytes}


def startup(peer: Peer, sizes: Sizes) -> dict[str, Any]:
    """Seconds from asking for ``startup_workers`` workers until a first call returns."""
    times = []
    for _ in range(sizes.startup_repeats):
        t0 = time.perf_counter()
        session = peer.start(sizes.startup_workers)
        try:
            session.call(noop)
            times.append(time.perf_counter() - t0)
        finally:
            session.close()
    return {"seconds": median(times), "all": times, "workers": sizes.startup_workers}
