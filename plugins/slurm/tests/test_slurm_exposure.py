"""What Slurm workers on three nodes (network-namespace hosts) expose: the address they listen
on, and TLS on every TCP link when the cluster asks for it."""

from __future__ import annotations

import socket

import pytest

import clustercore as cc

pytestmark = [pytest.mark.slurm3, pytest.mark.timeout(120)]


def transport_to(pid: int) -> str:
    """Run anywhere: how this process's link to ``pid`` is carried."""
    from clustercore.testing import worker_info

    return "TLS" if worker_info(pid).tls else "plain"


def host_via(pid: int) -> tuple[str, str]:
    """Run on a worker: the host of ``pid`` as it answers a call, and the link used."""
    return cc.remotecall_fetch(socket.gethostname, pid), transport_to(pid)


def test_slurm_workers_on_three_nodes_talk_over_tls(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", nodes=3, ntasks_per_node=1, tls=True)
    hosts = {p: cc.remotecall_fetch(socket.gethostname, p) for p in pids}
    assert len(set(hosts.values())) == 3
    assert {transport_to(p) for p in pids} == {"TLS"}
    a, b, c = pids
    assert cc.remotecall_fetch(host_via, a, b) == (hosts[b], "TLS")
    assert cc.remotecall_fetch(host_via, c, a) == (hosts[a], "TLS")
    big = bytes(range(256)) * 20_000
    assert cc.remotecall_fetch(lambda q, d: cc.remotecall_fetch(len, q, d), b, c, big) == len(big)


def listening() -> list[str]:
    """Run on a worker: the addresses its TCP sockets listen on."""
    import psutil

    return sorted({c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"})


def test_a_worker_listens_only_on_its_nodes_address(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", nodes=3, ntasks_per_node=1)
    for p in pids:
        own = cc.remotecall_fetch(lambda: socket.gethostbyname(socket.gethostname()), p)
        assert not own.startswith("127.") and cc.remotecall_fetch(listening, p) == [own]
    a, _, c = pids
    assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(cc.myid, q), a, c) == c
