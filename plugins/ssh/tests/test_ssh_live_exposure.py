"""What SSH-launched workers on network-namespace hosts expose: the address they listen on,
and TLS on the driver's links and their own."""

from __future__ import annotations

import os
import socket

import pytest
from ssh_testing import Launched, SSHInfra, TestHosts

import clustercore as cc
from clustercore.testing import worker_info

pytestmark = [pytest.mark.sshd, pytest.mark.hosts, pytest.mark.timeout(120)]


def transport_to(pid: int) -> str:
    """Run anywhere: how this process's link to ``pid`` is carried."""
    from clustercore.testing import worker_info

    return "TLS" if worker_info(pid).tls else "plain"


def via(pid: int, data: bytes) -> tuple[str, int, str]:
    """Run on a worker: a call to ``pid`` carrying ``data``, and the link it went over."""
    host, size = cc.remotecall_fetch(lambda d: (socket.gethostname(), len(d)), pid, data)
    return host, size, transport_to(pid)


def test_tls_links_between_hosts_carry_calls_and_refuse_plain_handshakes(
    cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts
) -> None:
    first, second = test_hosts.aliases[:2]
    pids = cc.addprocs([first, second], sshflags=ssh_infra.flags, tls=True)
    where = cluster.record(pids)
    a, b = sorted(pids, key=lambda p: where[p].hostname)
    assert {where[a].hostname, where[b].hostname} == {first, second}
    assert transport_to(a) == transport_to(b) == "TLS"
    blob = os.urandom(8_000_000)
    assert cc.remotecall_fetch(len, a, blob) == len(blob)
    # a worker dials another host over TCP: TLS there too, with the cookie handshake inside
    assert cc.remotecall_fetch(via, a, b, blob) == (where[b].hostname, len(blob), "TLS")
    # whoever speaks the plain handshake to a TLS worker's port is dropped unanswered
    host, port = worker_info(a).connect_at
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"CLSTCORE" + bytes(40))
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert cc.remotecall_fetch(via, b, a, b"still") == (where[a].hostname, 5, "TLS")


def listening() -> list[str]:
    """Run on a worker: the addresses its TCP sockets listen on."""
    import psutil

    return sorted({c.laddr.ip for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"})


def test_a_worker_listens_only_on_the_address_the_driver_reached_its_host_on(
    cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts
) -> None:
    pids = cc.addprocs(list(test_hosts.aliases[:2]), sshflags=ssh_infra.flags)
    where = cluster.record(pids)
    address_of = dict(zip(test_hosts.aliases, test_hosts.addresses, strict=True))
    for p in pids:
        assert cc.remotecall_fetch(listening, p) == [address_of[where[p].hostname]]
    a, b = pids
    assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(cc.myid, q), a, b) == b
