"""Estimate pi by Monte Carlo on local workers: pmap spreads the darts, pid 1 adds up.

Run with ``make demo`` (or ``python examples/demo.py [workers] [darts]``).
"""

from __future__ import annotations

import os
import random
import sys
import time

import clustercore as cc


def throw_darts(seed: int, n: int) -> tuple[int, int, int]:
    """Darts landing inside the unit quarter circle, with this worker's pid and os pid."""
    rng = random.Random(seed)
    inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return inside, cc.myid(), os.getpid()


def main() -> None:
    nworkers = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    darts = int(sys.argv[2]) if len(sys.argv) > 2 else 4_000_000
    started = time.perf_counter()
    cc.addprocs(nworkers)
    ready = time.perf_counter()
    chunks = 64
    per_chunk = darts // chunks
    results = cc.pmap(throw_darts, range(chunks), [per_chunk] * chunks, progress=True)
    inside = sum(r[0] for r in results)
    pi = 4 * inside / (per_chunk * chunks)
    done = time.perf_counter()
    print(f"pi ~= {pi:.6f} (error {abs(pi - 3.141592653589793):.2e}) from {per_chunk * chunks:,} darts")
    print("work done by:", ", ".join(sorted({f"pid {r[1]} (os pid {r[2]})" for r in results})))
    print(f"{nworkers} workers started in {ready - started:.2f} s; the computation took {done - ready:.2f} s")
    cc.rmprocs(cc.workers())


if __name__ == "__main__":
    main()
