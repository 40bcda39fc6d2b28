"""Latency again in child runs whose processes sit on chosen CPUs.

On a 2-core VM a loopback round trip costs ~15 µs when both processes share
a CPU and ~60 µs when they do not, and in the unpinned run the scheduler
decides which, differently from run to run. So ``python -m bench`` re-runs
``python -m bench --only latency`` in a child process per placement, with
A = the lowest CPU this process may use and B = the next one:

* ``pinned``: the child runs under ``taskset -c A`` (and pins its own
  threads to A as well, which is all it does without taskset); every
  process it starts inherits that, so driver and workers share CPU A.
* ``split``: the child pins every thread of its own to A and moves every
  descendant process, every thread of each, to B. It does so after each
  contestant is opened, after its warm-up and before every round, so
  processes a peer starts lazily land on B too. Skipped with fewer than two
  allowed CPUs.

Descendants are found through the parent pid in ``/proc/<pid>/stat``:
``/proc/<pid>/task/<tid>/children`` needs ``CONFIG_PROC_CHILDREN``, which
not every kernel has.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

PLACEMENTS = ("pinned", "split")


# -- CPUs, threads, descendants -------------------------------------------------


def allowed_cpus() -> list[int]:
    """The CPUs this thread may run on, lowest first."""
    return sorted(os.sched_getaffinity(0))


def split_cpus() -> tuple[int, int] | None:
    """(driver CPU, worker CPU) for the split placement; None with only one CPU."""
    cpus = allowed_cpus()
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def threads(pid: int) -> list[int]:
    """Thread ids of process ``pid``; empty if it is gone."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _parent_of() -> dict[int, int]:
    """pid -> parent pid, for every process in /proc."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        out[int(name)] = int(stat.rpartition(")")[2].split()[1])  # comm may hold spaces
    return out


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children, grandchildren, ...), parents first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_of().items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(0), [])
        out += kids
        todo += kids
    return out


def place(pid: int, cpu: int) -> int:
    """Every thread of process ``pid`` onto ``cpu`` alone; returns how many moved."""
    moved = 0
    for tid in threads(pid):
        with contextlib.suppress(ProcessLookupError):  # the thread just ended
            if os.sched_getaffinity(tid) != {cpu}:
                os.sched_setaffinity(tid, {cpu})
                moved += 1
    return moved


def move_descendants(cpu: int, root: int | None = None) -> int:
    """Every thread of every descendant of ``root`` (default: us) onto ``cpu``."""
    return sum(place(pid, cpu) for pid in descendants(os.getpid() if root is None else root))


@dataclass(frozen=True)
class Split:
    """The split placement: this process on ``driver_cpu``, its descendants on ``worker_cpu``."""

    driver_cpu: int
    worker_cpu: int

    def settle(self) -> None:
        """(Re)apply the placement; cheap and idempotent, so call it often."""
        place(os.getpid(), self.driver_cpu)
        move_descendants(self.worker_cpu)


def apply_in_child(placement: str) -> Split | None:
    """Set up ``placement`` in the child run before anything starts; the Split to
    re-apply as contestants open, or None when inheritance does the job."""
    if placement == "pinned":
        place(os.getpid(), allowed_cpus()[0])
        return None
    cpus = split_cpus()
    if placement != "split" or cpus is None:
        raise ValueError(f"cannot apply placement {placement!r} with CPUs {allowed_cpus()}")
    split = Split(*cpus)
    split.settle()
    return split


# -- the child run, seen from the parent ------------------------------------------


def skip_reason(placement: str) -> str | None:
    """Why ``placement`` cannot run here, or None."""
    if placement == "split" and split_cpus() is None:
        return f"needs 2 CPUs, only {allowed_cpus()} allowed"
    return None


def _how(placement: str, taskset: str | None) -> str:
    cpu = allowed_cpus()[0]
    if placement == "pinned":
        return f"taskset -c {cpu}" if taskset else f"os.sched_setaffinity({{{cpu}}})"
    a, b = split_cpus() or (cpu, cpu)
    return f"driver on CPU {a}, workers on CPU {b} (every thread, os.sched_setaffinity)"


def run_child(placement: str, quick: bool, peers: list[str], timeout: float) -> dict[str, Any]:
    """Results of ``python -m bench --only latency`` run with ``placement``,
    plus ``"how"``: the placement in words for the report."""
    taskset = shutil.which("taskset") if placement == "pinned" else None
    with tempfile.TemporaryDirectory(prefix=f"bench-{placement}-") as tmp:
        out = os.path.join(tmp, "latency.json")
        cmd = [sys.executable, "-m", "bench", "--only", "latency", "--_latency-child", out, "--_placement", placement]
        if peers:
            cmd += ["--peers", ",".join(peers)]
        if quick:
            cmd.append("--quick")
        if taskset:
            cmd = [taskset, "-c", str(allowed_cpus()[0]), *cmd]
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0 or not os.path.exists(out):
            tail = "\n".join(proc.stdout.splitlines()[-20:])
            raise RuntimeError(f"{placement} run exited {proc.returncode}:\n{tail}")
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
    result["how"] = _how(placement, taskset)
    return result


def add_half(results: dict[str, Any], placement: str, child: dict[str, Any]) -> None:
    """Store a child run as ``results["latency"][placement]`` (+ ``_how``, ``_affinity``)."""
    lat = results["latency"]
    lat[placement] = child["latency"]["unpinned"]
    lat[f"{placement}_how"] = child["how"]
    lat[f"{placement}_affinity"] = child["meta"]["affinity"]
    results["errors"] += [f"{placement} run: {e}" for e in child.get("errors", [])]
    results.setdefault("child_leftovers", []).extend(
        f"({placement} run) {d}" for d in child.get("leftover_processes", [])
    )
