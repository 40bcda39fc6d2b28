"""What TLS costs: the same calls over TCP links, plain and with TLS, in one run.

Local workers reach the driver through a Unix socket pair, which TLS leaves
alone, so both sessions here use workers on 127.0.0.1 that the driver dials
over TCP, as it dials SSH, Slurm and Kubernetes workers. A cluster uses TLS
for all its workers or for none, so the two kinds cannot run side by side:
instead they alternate, a fresh pair of workers each time (plain, TLS, TLS,
plain, ...), and each kind's figure pools its turns. The table gives each
figure and the ratio TLS / plain.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from bench.config import MIB, Sizes
from bench.tasks import identity, noop

KINDS = ("plain", "TLS")


def _turn(cc: Any, manager: Any, tls: bool, sizes: Sizes, calls: int, payload: np.ndarray) -> dict[str, list[float]]:
    pids = cc.addprocs(manager(1), tls=tls)
    try:
        pid = pids[0]
        for _ in range(sizes.latency_warmup):
            cc.remotecall_fetch(noop, pid)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            cc.remotecall_fetch(noop, pid)
            samples.append((time.perf_counter() - start) * 1e6)
        cc.remotecall_fetch(identity, pid, payload)  # warm-up
        rates = []
        for _ in range(max(1, sizes.bandwidth_repeats // 2)):
            start = time.perf_counter()
            back = cc.remotecall_fetch(identity, pid, payload)
            rates.append(2 * payload.nbytes / (time.perf_counter() - start) / 1e9)
            assert back.nbytes == payload.nbytes
        return {"latency_us": samples, "gbps": rates}
    finally:
        cc.rmprocs(pids)


def run(sizes: Sizes, quick: bool) -> dict[str, Any]:
    """Alternate plain and TLS turns; pooled medians and their ratios."""
    import clustercore as cc
    from clustercore.testing import TCPWorkers as manager  # workers the driver dials over TCP

    payload = np.ones(sizes.bandwidth_bytes // 8)
    turns = 2 if quick else 6
    calls = max(20, sizes.latency_calls // turns)
    pooled: dict[str, dict[str, list[float]]] = {k: {"latency_us": [], "gbps": []} for k in KINDS}
    for turn in range(turns):
        order = KINDS if turn % 2 == 0 else KINDS[::-1]
        for kind in order:
            got = _turn(cc, manager, kind == "TLS", sizes, calls, payload)
            for key, values in got.items():
                pooled[kind][key] += values
    result: dict[str, Any] = {"payload_mib": payload.nbytes / MIB, "turns": turns}
    for kind in KINDS:
        result[kind] = {
            "latency_median_us": statistics.median(pooled[kind]["latency_us"]),
            "gbps_median": statistics.median(pooled[kind]["gbps"]),
        }
    result["latency_ratio"] = result["TLS"]["latency_median_us"] / result["plain"]["latency_median_us"]
    result["bandwidth_ratio"] = result["TLS"]["gbps_median"] / result["plain"]["gbps_median"]
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        f"## TLS: one worker dialed over loopback TCP, plain and TLS alternating ({result['turns']} turns each)",
        "",
        f"| link | latency median µs | echo GB/s ({result['payload_mib']:.0f} MiB) |",
        "|---|---|---|",
    ]
    for kind in KINDS:
        r = result[kind]
        lines.append(f"| {kind} | {r['latency_median_us']:.0f} | {r['gbps_median']:.2f} |")
    lines += [
        "",
        f"TLS / plain: latency {result['latency_ratio']:.2f}x, bandwidth {result['bandwidth_ratio']:.2f}x",
    ]
    return "\n".join(lines)
