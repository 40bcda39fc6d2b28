"""Bandwidth and start-up, each run on one peer session (or peer) at a time.

Latency and throughput, sampled from every peer in interleaved rounds, are
in :mod:`bench.rounds`.

Every function returns a plain dict (JSON-ready). Timing uses
``time.perf_counter``; figures are medians over repeats after warm-ups.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.config import Sizes
from bench.peers import Peer, Session
from bench.stats import median
from bench.tasks import identity, noop


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
