"""The pinned latency run: the benchmark re-executed on one CPU.

Whether the driver and a worker share a CPU changes a loopback round trip
by several times on 2-core VMs, so latency is measured both ways in one
run. The pinned half re-executes ``python -m bench --only latency`` in a
child process under ``taskset -c 0`` (or, without taskset, the child pins
itself with ``os.sched_setaffinity`` before it starts any worker); every
process it starts inherits the affinity.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any


def pin_cpu() -> int:
    """CPU 0, or the lowest CPU this process may use if 0 is not among them."""
    return min(os.sched_getaffinity(0))


def pin_self() -> None:
    os.sched_setaffinity(0, {pin_cpu()})


def run_pinned_latency(quick: bool, peers: list[str], timeout: float) -> dict[str, Any]:
    """Latency results of the child run: ``{"latency": ..., "meta": ..., ...}``."""
    with tempfile.TemporaryDirectory(prefix="bench-pinned-") as tmp:
        out = os.path.join(tmp, "pinned.json")
        cmd = [sys.executable, "-m", "bench", "--only", "latency", "--_latency-child", out]
        if peers:
            cmd += ["--peers", ",".join(peers)]
        if quick:
            cmd.append("--quick")
        taskset = shutil.which("taskset")
        if taskset:
            cmd = [taskset, "-c", str(pin_cpu()), *cmd]
        else:
            cmd.append("--_pin-self")
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            raise RuntimeError(f"pinned run exited {proc.returncode}:\n{tail}")
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
        cpu = pin_cpu()
        result["how"] = f"taskset -c {cpu}" if taskset else f"os.sched_setaffinity({{{cpu}}})"
        return result
