"""How long ``addprocs(n)`` takes for many local workers, and whose CPU it is.

``python -m bench.many_workers [N] [--rounds R]`` (default 1,024 workers, 3 rounds):
each round a fresh driver process adds N local workers, runs a first and a second
``pmap`` of 4N elements and removes them, and prints the wall times and the CPU
of the driver, its fork server and the workers (issue 10's goal: 1,024 workers
ready in 5 s on a 2-core machine). A driver process per round: the fork server
and the driver start cold each time, as a user's script would.

CPU is the kernel's exact run time: the driver's ``process_time``, and the
``schedstat`` of every live thread of the fork server and of each worker (not
``/proc/PID/stat``, whose ticks miss most of a short-lived worker's bursts).
Wall times on a shared VM are rough: compare the rounds' spread, not one figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_ROUND = r"""
import json, os, sys, time
import clustercore as cc
from clustercore.engine.cluster import PGRP

n = int(sys.argv[1])

def run_time(pid):  # ns the kernel counted for every live thread of pid
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total / 1e9

def children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out

cpu0, t0 = time.process_time(), time.monotonic()
pids = cc.addprocs(n)
added, driver_cpu = time.monotonic() - t0, time.process_time() - cpu0
servers = children(os.getpid())
fork_server_cpu = sum(run_time(p) for p in servers)
workers_cpu = sum(run_time(w.ospid) for w in PGRP.workers.values() if w.ospid)
t = time.monotonic(); cc.pmap(lambda x: x + 1, range(4 * n)); pmap1 = time.monotonic() - t
t = time.monotonic(); cc.pmap(lambda x: x + 1, range(4 * n)); pmap2 = time.monotonic() - t
t = time.monotonic(); cc.rmprocs(pids, waitfor=120); removed = time.monotonic() - t
print(json.dumps(dict(addprocs=added, driver_cpu=driver_cpu, fork_server_cpu=fork_server_cpu,
                      workers_cpu=workers_cpu, first_pmap=pmap1, second_pmap=pmap2, rmprocs=removed)))
"""


def _round(n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _ROUND, str(n)], capture_output=True, text=True, timeout=600, check=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.many_workers", description=__doc__.splitlines()[0])
    p.add_argument("workers", nargs="?", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print(f"addprocs({args.workers}), {args.rounds} rounds, each in a fresh driver ({os.cpu_count()} CPUs)")
    print("round  addprocs s  driver ms/w  fork server ms/w  workers ms/w  1st pmap s  2nd pmap s  rmprocs s")
    for i in range(args.rounds):
        r = _round(args.workers)
        n = args.workers
        print(
            f"{i + 1:5}  {r['addprocs']:10.2f}  {r['driver_cpu'] / n * 1e3:11.2f}  "
            f"{r['fork_server_cpu'] / n * 1e3:16.2f}  {r['workers_cpu'] / n * 1e3:12.2f}  "
            f"{r['first_pmap']:10.2f}  {r['second_pmap']:10.2f}  {r['rmprocs']:9.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
