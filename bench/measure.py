"""Throughput, bandwidth and start-up, each run on one peer session (or peer).

Latency, sampled from every peer in turn, is in :mod:`bench.latency`.

Every function returns a plain dict (JSON-ready). Timing uses
``time.perf_counter``; figures are medians over repeats after warm-ups.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.config import Sizes
from bench.peers import Peer, Session, Skip
from bench.stats import median
from bench.tasks import identity, inc, noop


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
