"""Start-up over SSH: the SSH plugin against one ``ssh`` process per worker (Julia's way).

``python -m bench.ssh_startup [--repeat 5] [--quick] [--json PATH]``

Two scenarios: 8 workers on one host (the loopback sshd, ``cc-local``) and
3 x 4 workers across the namespace hosts (``ccnode1..3``). Each repetition
measures, back to back in this one run:

* ``clustercore-ssh``: ``addprocs([(host, n), ...])``: one paramiko transport
  per host, one session channel per worker, from the call until every worker
  is connected and joined;
* ``ssh per worker``: the same ``addprocs`` through a manager that starts one
  OpenSSH ``ssh`` process per worker (what Julia's ``SSHManager`` runs), with
  the same remote command, the core's default connect;
* ``floor``: one ``ssh HOST python -c "import clustercore.engine.worker"`` per worker,
  all at once: the least any one-ssh-per-worker launcher pays.

``rmprocs`` is timed separately for both. The SSH servers come from
``make services`` (as root), with its variables in the environment
(``set -a; . /tmp/clustercore-services/env``: ``CLUSTERCORE_SSH_CONFIG`` and
``CLUSTERCORE_TEST_HOSTNAMES``); the cross-host scenario is left out without
the hosts. No timing is asserted; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from threading import Condition
from typing import Any

from bench.stats import median, ratio

SSH_TIMEOUT = 120.0


def _ssh_base(config: str) -> list[str]:
    return ["ssh", "-F", config, "-T", "-a", "-x", "-o", "ClearAllForwardings=yes"]


def _make_ssh_process_manager() -> type:
    from clustercore_ssh.remote_command import shell_command

    import clustercore as cc
    from clustercore.engine.launching import WorkerConfig, worker_command, worker_environment
    from clustercore.engine.managers import ClusterManager

    @dataclass(eq=False)
    class SSHProcessManager(ClusterManager):
        """Julia's way: ``ssh host 'exec python -m clustercore worker'`` once per worker."""

        machines: list[tuple[str, int]]
        config: str

        def launch(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
            line = shell_command(worker_command(params, lifeline=True), env=worker_environment(params))
            cookie = (cc.cluster_cookie() + "\n").encode()
            for host, count in self.machines:
                for _ in range(count):
                    proc = subprocess.Popen(
                        [*_ssh_base(self.config), host, line],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,  # the remote login shell's chatter
                    )
                    assert proc.stdin is not None
                    proc.stdin.write(cookie)
                    proc.stdin.flush()
                    with launch_ntfy:
                        launched.append(WorkerConfig(io=proc.stdout, process=proc))
                        launch_ntfy.notify_all()

        def manage(self, id: int, config: WorkerConfig, op: str) -> None:
            pass

    return SSHProcessManager


def _floor(config: str, machines: list[tuple[str, int]]) -> None:
    command = f"{sys.executable} -c 'import clustercore.engine.worker'"
    procs = [
        subprocess.Popen([*_ssh_base(config), host, command], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for host, count in machines
        for _ in range(count)
    ]
    for proc in procs:
        if proc.wait(SSH_TIMEOUT) != 0:
            raise RuntimeError(f"floor: {proc.args!r} failed")


def _timed_addprocs(make: Any, expected: int) -> tuple[float, float]:
    import clustercore as cc

    start = time.perf_counter()
    pids = make()
    added = time.perf_counter() - start
    if len(pids) != expected:
        raise RuntimeError(f"addprocs gave {len(pids)} workers, not {expected}")
    start = time.perf_counter()
    cc.rmprocs(pids)
    return added, time.perf_counter() - start


def measure(config: str, machines: list[tuple[str, int]], repeat: int) -> dict[str, list[float]]:
    import clustercore as cc

    manager_cls = _make_ssh_process_manager()
    total = sum(count for _, count in machines)
    flags = ("-F", config)
    methods = {
        "clustercore-ssh": lambda: cc.addprocs(machines, sshflags=flags),
        "ssh per worker": lambda: cc.addprocs(manager_cls(machines=machines, config=config)),
    }
    samples: dict[str, list[float]] = {"floor": []}
    for name in methods:
        samples[name] = []
        samples[f"{name} rmprocs"] = []
    for make in methods.values():  # warm-up: imports, first connections, page cache
        _timed_addprocs(make, total)
    for i in range(repeat):
        start = time.perf_counter()
        _floor(config, machines)
        samples["floor"].append(time.perf_counter() - start)
        for name, make in methods.items():
            added, removed = _timed_addprocs(make, total)
            samples[name].append(added)
            samples[f"{name} rmprocs"].append(removed)
        print(f"  {machines}: repetition {i + 1}/{repeat} done", file=sys.stderr, flush=True)
    return samples


def report(title: str, samples: dict[str, list[float]]) -> list[str]:
    med = {name: median(xs) for name, xs in samples.items()}
    ref = med["ssh per worker"]
    lines = [f"== start-up over SSH: {title} (median of {len(samples['floor'])}; ratio = time / ssh per worker)"]
    for name in ("clustercore-ssh", "ssh per worker", "floor"):
        r = ratio(med[name], ref)
        lines.append(f"  {name:<28} {med[name]:8.3f} s   {r:5.2f}x" if r is not None else f"  {name:<28} -")
    for name in ("clustercore-ssh rmprocs", "ssh per worker rmprocs"):
        lines.append(f"  {name:<28} {med[name]:8.3f} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ssh_startup", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one repetition: a smoke test, not a measurement")
    parser.add_argument("--json", metavar="PATH", help="also write the samples as JSON")
    args = parser.parse_args(argv)
    config = os.environ.get("CLUSTERCORE_SSH_CONFIG")
    if not config:
        parser.error(
            "CLUSTERCORE_SSH_CONFIG is not set: run `make services` as root, then `set -a;"
            " . /tmp/clustercore-services/env`"
        )
    repeat = 1 if args.quick else args.repeat
    scenarios = {"8 workers on one host": [(os.environ.get("CLUSTERCORE_SSH_ALIAS", "cc-local"), 8)]}
    hosts = os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()
    if len(hosts) >= 3:
        scenarios["3 hosts x 4 workers"] = [(h, 4) for h in hosts[:3]]
    else:
        print("(no namespace hosts: run `make services` as root for the cross-host scenario)")
    results = {title: measure(config, machines, repeat) for title, machines in scenarios.items()}
    for title, samples in results.items():
        print("\n".join(report(title, samples)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
