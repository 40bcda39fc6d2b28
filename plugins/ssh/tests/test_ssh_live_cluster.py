"""Workers on real hosts: namespace hosts with their own sshd and address, and the loopback sshd."""

from __future__ import annotations

import os
import random
import socket
import threading

import pytest
from clustercore_ssh import SSHManager
from clustercore_ssh.session import WorkerSession
from ssh_testing import Launched, SSHInfra, TestHosts, ssh_run

import clustercore as cc

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def hostname() -> str:
    return socket.gethostname()


def peer_addresses() -> list[str]:
    """Remote addresses of this worker's established TCP connections."""
    import psutil

    return sorted(
        {c.raddr.ip for c in psutil.Process().net_connections("tcp") if c.raddr and c.status == "ESTABLISHED"}
    )


def listening() -> list[tuple[str, int]]:
    import psutil

    return sorted({(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections("tcp") if c.status == "LISTEN"})


def link_family(pid: int) -> int:
    """Run on a worker: the address family of its link to ``pid``."""
    from clustercore.testing import worker_info

    link = worker_info(pid).link
    return int(link.family) if link is not None else -1


def ask_hostname_of(pid: int) -> str:
    """Run on a worker: a worker-to-worker call."""
    return cc.remotecall_fetch(hostname, pid)


@pytest.mark.hosts
def test_three_hosts_two_workers_each_all_to_all(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    pids = cc.addprocs([(h, 2) for h in test_hosts.aliases], sshflags=ssh_infra.flags, lazy=False)
    assert pids == sorted(pids) and len(pids) == 6
    where = cluster.record(pids)
    names = {p: w.hostname for p, w in where.items()}
    assert sorted(names.values()) == sorted(2 * list(test_hosts.aliases))
    for p in pids:  # procs(pid) groups by host
        assert sorted(cc.procs(p)) == sorted(q for q in pids if names[q] == names[p])
    calls = {(a, b): cc.remotecall(ask_hostname_of, a, b) for a in pids for b in pids if a != b}
    assert {k: f.fetch() for k, f in calls.items()} == {(a, b): names[b] for a, b in calls}
    # two workers on one host talk over a Unix socket; across network namespaces over TCP
    families = {(a, b): cc.remotecall_fetch(link_family, a, b) for a, b in calls}
    assert families == {(a, b): socket.AF_UNIX if names[a] == names[b] else socket.AF_INET for a, b in calls}


@pytest.mark.hosts
@pytest.mark.parametrize("tunnel", [False, True])
def test_tunnel_on_and_off(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts, tunnel: bool) -> None:
    hosts = test_hosts.aliases[:2]
    pids = cc.addprocs(list(hosts), sshflags=ssh_infra.flags, tunnel=tunnel)
    cluster.record(pids)
    assert sorted(cc.remotecall_fetch(hostname, p) for p in pids) == sorted(hosts)
    assert cc.remotecall_fetch(ask_hostname_of, pids[0], pids[1]) in hosts  # workers dial each other directly
    for p in pids:
        peers = cc.remotecall_fetch(peer_addresses, p)
        # without a tunnel the driver dials the worker from its own address; with one, sshd on the host does
        assert (test_hosts.controller in peers) is not tunnel, peers


@pytest.mark.hosts
def test_tunnel_master_worker_binds_loopback(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    pids = cc.addprocs([(test_hosts.aliases[0], 2)], sshflags=ssh_infra.flags, tunnel=True, topology="master_worker")
    cluster.record(pids)
    for p in pids:
        assert {ip for ip, _ in cc.remotecall_fetch(listening, p)} == {"127.0.0.1"}


def test_max_parallel_bounds_concurrent_session_starts(
    cluster: Launched, ssh_infra: SSHInfra, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    crowded = threading.Event()  # set if a third start ever overlaps two others
    original = WorkerSession.start.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: object, **kwargs: object) -> WorkerSession:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            if state["now"] > 2:
                crowded.set()
        try:
            crowded.wait(0.3)  # hold the slot a while so that an unbounded launch would overlap
            return original(cls, *args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(WorkerSession, "start", classmethod(counted))
    pids = cc.addprocs(SSHManager(machines=[(ssh_infra.alias, 8)], sshflags=ssh_infra.flags, max_parallel=2))
    cluster.record(pids)
    assert len(pids) == 8
    assert state["most"] == 2 and not crowded.is_set()


@pytest.mark.hosts
def test_auto_count_is_the_hosts_cpu_threads(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    host = test_hosts.aliases[0]
    pids = cc.addprocs([(host, "auto")], sshflags=ssh_infra.flags)
    cluster.record(pids)
    assert len(pids) == cc.remotecall_fetch(os.cpu_count, pids[0])
    assert {cc.remotecall_fetch(hostname, p) for p in pids} == {host}


@pytest.mark.hosts
def test_bind_addr_and_port(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    (a, b), (addr_a, _) = test_hosts.aliases[:2], test_hosts.addresses[:2]
    port = random.randint(20000, 40000)
    pids = cc.addprocs([f"{a} {addr_a}:{port}", b], sshflags=ssh_infra.flags)
    where = cluster.record(pids)
    on_a = next(p for p in pids if where[p].hostname == a)
    on_b = next(p for p in pids if p != on_a)
    assert cc.remotecall_fetch(listening, on_a) == [(addr_a, port)]
    assert cc.remotecall_fetch(ask_hostname_of, on_b, on_a) == a


@pytest.mark.hosts
def test_proxy_jump(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    host = test_hosts.aliases[1]
    pids = cc.addprocs([host], sshflags=(*ssh_infra.flags, "-J", ssh_infra.alias), tunnel=True)
    cluster.record(pids)
    assert cc.remotecall_fetch(hostname, pids[0]) == host


def test_loopback_sshd_with_explicit_flags(cluster: Launched, ssh_infra: SSHInfra) -> None:
    """No ssh_config at all: -p, -i and -o options only."""
    flags = (
        "-p", str(ssh_infra.port), "-i", ssh_infra.key, "-o", f"UserKnownHostsFile={ssh_infra.known_hosts}",
        "-o", "IdentitiesOnly=yes", "-T", "-a", "-x",
    )  # fmt: skip
    pids = cc.addprocs([(f"{ssh_infra.user}@{ssh_infra.host}", 2)], sshflags=flags)
    cluster.record(pids)
    assert len(pids) == 2 and cc.remotecall_fetch(sum, pids[1], [1, 2]) == 3


def test_one_transport_per_host(cluster: Launched, ssh_infra: SSHInfra) -> None:
    manager = SSHManager(machines=[(ssh_infra.alias, 3)], sshflags=ssh_infra.flags, tunnel=True)
    pids = cc.addprocs(manager)
    cluster.record(pids)
    (conn,) = manager._connections.values()
    assert len(conn._links) == 1  # three sessions and three forwards on one transport


@pytest.mark.hosts
def test_working_directory_and_env(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = test_hosts.aliases[2]
    (a,) = cc.addprocs([host], sshflags=ssh_infra.flags)  # default: the driver's directory, shared here
    cluster.record([a])
    assert cc.remotecall_fetch(os.getcwd, a) == os.getcwd()
    env = {"GREETING": "it's $HOME"}
    (b,) = cc.addprocs([host], sshflags=ssh_infra.flags, dir=str(tmp_path), env=env)
    cluster.record([b])
    assert cc.remotecall_fetch(os.getcwd, b) == str(tmp_path)
    assert cc.remotecall_fetch(os.getenv, b, "GREETING") == "it's $HOME"
    assert cc.remotecall_fetch(os.getenv, b, "OPENBLAS_NUM_THREADS") == "1"


def test_cookie_is_not_on_the_remote_command_line_or_environment(cluster: Launched, ssh_infra: SSHInfra) -> None:
    (pid,) = cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags)
    worker = cluster.record([pid])[pid]
    seen = ssh_run(ssh_infra, ssh_infra.alias, f"cat /proc/{worker.ospid}/cmdline /proc/{worker.ospid}/environ")
    text = seen.stdout.replace("\0", " ")
    assert "-m clustercore worker --bind-to ssh --lifeline" in text
    assert cc.cluster_cookie() not in text
