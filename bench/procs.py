"""Leak check: which of our own child processes outlived the benchmarks.

Only descendants of this process are considered, found by pid through
psutil (a dependency of dask.distributed; without it, only
multiprocessing's own children are seen). Resource trackers are
per-interpreter helpers that exit with us, so they do not count.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from typing import Any

_HELPERS = ("resource_tracker", "semaphore_tracker", "forkserver")


def _descendants() -> list[Any]:
    try:
        import psutil
    except ImportError:
        return list(mp.active_children())
    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if not any(h in cmd for h in _HELPERS):
            out.append(p)
    return out


def _describe(p: Any) -> str:
    try:
        return f"pid {p.pid}: {' '.join(p.cmdline())[:160]}"
    except Exception:  # noqa: BLE001 - the process may be gone by now
        return f"pid {p.pid}"


def leftover_children(grace: float = 10.0) -> list[str]:
    """Descendants still alive after ``grace`` seconds; they are then terminated.

    Returns a description of each, so the report can name the leak.
    """
    mp.active_children()  # reaps finished multiprocessing children
    deadline = time.monotonic() + grace
    left = _descendants()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        mp.active_children()
        left = [p for p in _descendants() if p.pid in {q.pid for q in left}]
    described = [_describe(p) for p in left]
    for p in left:  # our own leaked children, by pid
        with contextlib.suppress(Exception):  # already gone
            p.terminate()
    return described
