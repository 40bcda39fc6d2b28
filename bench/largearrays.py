"""Large arrays on one host (issue 15): echoes against a raw socket, one array to many workers.

* **echo**: a 100 MiB and a 1 GiB numpy array to a local worker and back
  (``remotecall_fetch(identity, pid, a)``), against the raw socket echo of the
  same size with a reused buffer (:func:`bench.floor.echo_bandwidth`).
* **broadcast**: the same 256 MiB array to each of 8 local workers, until every
  worker has it: one worker (the reference), 8 plain calls at once, ``cc.share``
  then 8 calls, ``everywhere(..., values)``; ``mp.Pool(8, initializer=...)``
  (each worker gets its own pickled copy) and dask's ``scatter(broadcast=True)``
  on 8 local processes, where dask is installed. For each, the peak resident
  memory (``ru_maxrss``) of the driver and the largest of the workers'; pages of a
  shared memfd count in every process that touches them, so a sum would count
  them once per process.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from typing import Any

import numpy as np

from bench.config import MIB, Sizes
from bench.tasks import identity

BROADCAST_WORKERS = 8


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _has(x: np.ndarray) -> int:
    """On a worker: touch every page of ``x`` (a real use reads it) and report its size."""
    return int(x[:: max(1, 4096 // x.itemsize)].sum() >= 0) * x.nbytes


def _has_global() -> int:
    import sys

    return _has(sys.modules["__main__"].big)


def _echo(cc: Any, nbytes: int, repeats: int) -> dict[str, Any]:
    from bench import floor

    a = np.random.default_rng(0).random(nbytes // 8)
    pid = cc.addprocs(1)[0]
    try:
        if not np.array_equal(cc.remotecall_fetch(identity, pid, a), a):
            raise AssertionError("echo returned a different array")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            cc.remotecall_fetch(identity, pid, a)
            times.append(time.perf_counter() - start)
    finally:
        cc.rmprocs([pid])
    gbps = 2 * a.nbytes / statistics.median(times) / 1e9
    raw = floor.echo_bandwidth(nbytes, True, 1, repeats)["gbps"]
    return {"mib": nbytes / MIB, "gbps": gbps, "raw_gbps": raw, "ratio": gbps / raw}


def _pool_init(x: np.ndarray) -> None:
    global _pool_array
    _pool_array = x


def _pool_has(_: int) -> int:
    return _has(_pool_array)


_pool_array: np.ndarray | None = None


def _broadcast(cc: Any, nbytes: int, repeats: int, quick: bool) -> dict[str, Any]:
    a = np.random.default_rng(1).random(nbytes // 8)
    pids = cc.addprocs(BROADCAST_WORKERS)

    def share_all() -> None:  # shared once, then passed to every worker
        shared = cc.share(a)
        for f in [cc.remotecall(_has, p, shared) for p in pids]:
            cc.fetch(f)

    def everywhere_all() -> None:
        cc.everywhere("", procs=pids, big=a)
        for f in [cc.remotecall(_has_global, p) for p in pids]:
            cc.fetch(f)

    ways: dict[str, Any] = {
        "1 worker": lambda: cc.remotecall_fetch(_has, pids[0], a),
        f"{BROADCAST_WORKERS} workers, plain calls": lambda: [
            cc.fetch(f) for f in [cc.remotecall(_has, p, a) for p in pids]
        ],
        f"{BROADCAST_WORKERS} workers, cc.share": share_all,
        f"{BROADCAST_WORKERS} workers, everywhere": everywhere_all,
    }
    out: dict[str, Any] = {"mib": nbytes / MIB, "workers": BROADCAST_WORKERS, "ways": {}}
    try:
        for name, run in ways.items():
            run()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            out["ways"][name] = {"seconds": statistics.median(times)}
        rss = [cc.remotecall_fetch(_peak_rss_mib, p) for p in pids]
        out["clustercore_rss_mib"] = {"driver": _peak_rss_mib(), "largest worker": max(rss)}
    finally:
        cc.rmprocs(pids)
    out["ways"]["mp.Pool initializer"] = _mp_pool(a, repeats)
    dask = None if quick else _dask(a, repeats)  # a smoke test needs no 8-process dask cluster
    if dask is not None:
        out["ways"]["dask scatter(broadcast=True)"] = dask
    one = out["ways"]["1 worker"]["seconds"]
    for way in out["ways"].values():
        if "seconds" in way:
            way["x one worker"] = way["seconds"] / one
    return out


def _mp_pool(a: np.ndarray, repeats: int) -> dict[str, Any]:
    times = []
    ctx = mp.get_context("fork")
    for _ in range(repeats):
        start = time.perf_counter()
        with ctx.Pool(BROADCAST_WORKERS, initializer=_pool_init, initargs=(a,)) as pool:
            pool.map(_pool_has, range(BROADCAST_WORKERS), chunksize=1)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "note": "pool start included"}


def _dask(a: np.ndarray, repeats: int) -> dict[str, Any] | None:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        return None
    with (
        LocalCluster(n_workers=BROADCAST_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        Client(lc) as client,
    ):
        workers = list(client.scheduler_info()["workers"])
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            future = client.scatter(a, broadcast=True)
            client.gather([client.submit(_has, future, workers=[w], pure=False) for w in workers])
            times.append(time.perf_counter() - start)
            del future
        rss = client.run(_peak_rss_mib)
    return {"seconds": statistics.median(times[1:]), "largest worker rss_mib": max(rss.values())}


def run(sizes: Sizes, quick: bool) -> dict[str, Any]:
    import clustercore as cc

    repeats = 1 if quick else 3
    echo_sizes = [4 * MIB, 16 * MIB] if quick else [100 * MIB, 1024 * MIB]
    result: dict[str, Any] = {"echo": [_echo(cc, n, repeats) for n in echo_sizes]}
    result["broadcast"] = _broadcast(cc, 8 * MIB if quick else 256 * MIB, repeats, quick)
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        "## Large arrays on one host (issue 15)",
        "",
        "| echo to a local worker and back | clustercore GB/s | raw socket echo GB/s (reused buffer) | x raw |",
        "|---|---|---|---|",
    ]
    for e in result["echo"]:
        lines.append(f"| {e['mib']:.0f} MiB | {e['gbps']:.2f} | {e['raw_gbps']:.2f} | {e['ratio']:.2f}x |")
    b = result["broadcast"]
    lines += [
        "",
        f"| the same {b['mib']:.0f} MiB array to every worker, until each has read it | seconds | x one worker |",
        "|---|---|---|",
    ]
    for name, way in b["ways"].items():
        if "seconds" in way:
            lines.append(f"| {name} | {way['seconds']:.3f} | {way['x one worker']:.2f}x |")
    rss = b.get("clustercore_rss_mib")
    if rss:
        lines.append("")
        lines.append(
            f"peak resident memory, clustercore run: driver {rss['driver']:.0f} MiB, "
            f"largest worker {rss['largest worker']:.0f} MiB"
        )
    return "\n".join(lines)
