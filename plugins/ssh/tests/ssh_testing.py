"""Helpers for the live tests: what the test services gave us, and remote processes seen through OpenSSH."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

NUM_HOSTS = 3


@dataclass(frozen=True)
class SSHInfra:
    """The loopback sshd of ``make services`` (``tests/services/sshd``)."""

    config: str
    key: str
    known_hosts: str
    alias: str
    host: str
    port: int
    user: str

    @property
    def flags(self) -> tuple[str, ...]:
        return ("-F", self.config)


@dataclass(frozen=True)
class TestHosts:
    """The namespace hosts of ``make services`` (``tests/services/hosts``): ssh aliases (= hostnames), addresses."""

    __test__ = False
    aliases: tuple[str, ...]
    addresses: tuple[str, ...]
    controller: str


def ssh_run(infra: SSHInfra, host: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``host`` with the ``ssh`` binary (independent of the plugin)."""
    return subprocess.run(
        ["ssh", "-F", infra.config, "-T", host, command], capture_output=True, text=True, timeout=timeout, check=False
    )


def alive_pids(infra: SSHInfra, host: str, pids: list[int]) -> list[int]:
    """Those of ``pids`` that are live (not zombie) processes on ``host``."""
    if not pids:
        return []
    script = "for p in {}; do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null) && [ \"$s\" != Z ] && echo $p; done; true"
    proc = ssh_run(infra, host, script.format(" ".join(map(str, pids))))
    assert proc.returncode == 0, proc.stderr
    return [int(x) for x in proc.stdout.split()]


def wait_gone(infra: SSHInfra, host: str, pids: list[int], timeout: float = 15) -> list[int]:
    """Poll until the processes are gone (a remote exit has no event we could wait on)."""
    deadline = time.monotonic() + timeout
    left = alive_pids(infra, host, pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = alive_pids(infra, host, left)
    return left


@dataclass
class RemoteWorker:
    pid: int
    hostname: str
    ospid: int


def _where() -> tuple[str, int]:
    import socket

    return socket.gethostname(), os.getpid()


def describe_workers(pids: list[int]) -> dict[int, RemoteWorker]:
    """Where each worker runs, asked of the worker itself."""
    import clustercore as cc

    futures = {p: cc.remotecall(_where, p) for p in pids}
    return {p: RemoteWorker(p, *f.fetch()) for p, f in futures.items()}


class Launched:
    """The remote processes a test started, to prove they are gone afterwards (by pid, over ssh)."""

    def __init__(self, infra: SSHInfra, alias_of: dict[str, str]) -> None:
        self.infra = infra
        self.alias_of = alias_of  # hostname -> ssh alias
        self.remote: list[tuple[str, int]] = []

    def record(self, pids: list[int]) -> dict[int, RemoteWorker]:
        found = describe_workers(pids)
        self.remote += [(self.alias_of.get(w.hostname, self.infra.alias), w.ospid) for w in found.values()]
        return found

    def add(self, host: str, ospid: int) -> None:
        self.remote.append((host, ospid))

    def leftovers(self) -> dict[str, list[int]]:
        by_host: dict[str, list[int]] = {}
        for host, ospid in self.remote:
            by_host.setdefault(host, []).append(ospid)
        return {h: left for h, pids in by_host.items() if (left := wait_gone(self.infra, h, pids))}


def tagged_pids(infra: SSHInfra, host: str, tag: str, timeout: float = 15) -> list[int]:
    """Live processes on ``host`` whose environment holds ``tag``, once they stop going away."""
    command = f"grep -l -s -a {tag} /proc/[0-9]*/environ | cut -d/ -f3; true"
    deadline = time.monotonic() + timeout
    while True:
        proc = ssh_run(infra, host, command)
        found = [int(p) for p in proc.stdout.split() if p.isdigit()]
        found = alive_pids(infra, host, found)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
