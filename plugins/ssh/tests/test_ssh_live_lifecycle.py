"""A worker's life over SSH: output, interrupt, removal, a killed process, a dropped connection."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest
from clustercore_ssh import SSHManager
from clustercore_ssh import session as session_module
from clustercore_ssh.connection import HostConnection
from clustercore_ssh.deadline import Deadline
from clustercore_ssh.hostconfig import resolve_host
from clustercore_ssh.remote_command import shell_command
from clustercore_ssh.session import WorkerSession
from clustercore_ssh.sshflags import parse_sshflags
from ssh_testing import Launched, SSHInfra, TestHosts, alive_pids, ssh_run

import clustercore as cc
from clustercore import ProcessExitedException, RemoteException
from clustercore.testing import worker_output

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def sleep_after_telling(started: cc.Future, seconds: float) -> None:
    cc.put(started, os.getpid())
    time.sleep(seconds)


def test_output_is_forwarded(cluster: Launched, ssh_infra: SSHInfra) -> None:
    (pid,) = cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags)
    cluster.record([pid])
    with worker_output() as out:
        cc.remotecall_fetch(print, pid, "hello over ssh", flush=True)
        assert out.wait_for(f"From worker {pid}:\thello over ssh")


def test_interrupt_reaches_the_call_in_flight(cluster: Launched, ssh_infra: SSHInfra) -> None:
    (pid,) = cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags)
    cluster.record([pid])
    started = cc.Future()
    call = cc.remotecall(sleep_after_telling, pid, started, 60)
    started.wait()
    cc.interrupt(pid)
    with pytest.raises(RemoteException) as info:
        call.fetch()
    assert isinstance(info.value.captured.ex, KeyboardInterrupt)
    assert cc.remotecall_fetch(sum, pid, [2, 3]) == 5  # the worker lives on


def test_rmprocs_ends_remote_processes_and_the_connection(cluster: Launched, ssh_infra: SSHInfra) -> None:
    manager = SSHManager(machines=[(ssh_infra.alias, 3)], sshflags=ssh_infra.flags)
    pids = cc.addprocs(manager)
    where = cluster.record(pids)
    (conn,) = manager._connections.values()
    cc.rmprocs(pids[0])
    assert alive_pids(ssh_infra, ssh_infra.alias, [where[pids[0]].ospid]) == []  # gone when rmprocs returns
    assert conn.active
    cc.rmprocs(pids[1:])
    assert alive_pids(ssh_infra, ssh_infra.alias, [where[p].ospid for p in pids]) == []
    assert conn.closed and not conn.active  # the last worker took the SSH connection with it


def test_killing_the_remote_process(cluster: Launched, ssh_infra: SSHInfra) -> None:
    pids = cc.addprocs([(ssh_infra.alias, 2)], sshflags=ssh_infra.flags)
    where = cluster.record(pids)
    victim, other = pids
    started = cc.Future()
    call = cc.remotecall(sleep_after_telling, victim, started, 60)
    started.wait()
    assert ssh_run(ssh_infra, ssh_infra.alias, f"kill -9 {where[victim].ospid}").returncode == 0
    with pytest.raises(ProcessExitedException):
        call.fetch()
    with pytest.raises(ProcessExitedException):
        cc.remotecall_fetch(os.getpid, victim)
    assert cc.remotecall_fetch(os.getpid, other) == where[other].ospid
    assert cc.workers() == [other]


def _sshd_serving(ssh_infra: SSHInfra, host: str, client_port: int) -> int:
    """The pid of the sshd process that serves our connection from local port ``client_port``."""
    proc = ssh_run(ssh_infra, host, "ss -Htnp state established")
    for line in proc.stdout.splitlines():
        if f":{client_port} " in line + " " and "sshd" in line:
            return int(line.split("pid=")[1].split(",")[0])
    raise AssertionError(f"no sshd serves port {client_port}:\n{proc.stdout}")


@pytest.mark.hosts
@pytest.mark.parametrize("tunnel", [False, True])
@pytest.mark.parametrize("side", ["client", "server"])
def test_dropped_ssh_connection(
    cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts, tunnel: bool, side: str
) -> None:
    host = test_hosts.aliases[1]
    manager = SSHManager(machines=[(host, 2)], sshflags=ssh_infra.flags, tunnel=tunnel)
    pids = cc.addprocs(manager)
    cluster.record(pids)
    startes = [cc.Future() for _ in pids]
    calls = [cc.remotecall(sleep_after_telling, p, s, 60) for p, s in zip(pids, startes, strict=True)]
    for s in startes:
        s.wait()
    (conn,) = manager._connections.values()
    (link,) = conn._links
    if side == "client":  # the network goes away under us
        link.transport.sock.shutdown(socket.SHUT_RDWR)
    else:  # the server end dies
        sshd = _sshd_serving(ssh_infra, host, link.transport.sock.getsockname()[1])
        assert ssh_run(ssh_infra, host, f"kill -9 {sshd}").returncode == 0
    for call in calls:
        with pytest.raises(ProcessExitedException):
            call.fetch()
    assert wait_for(lambda: cc.procs() == [1]), cc.procs()  # the core deregisters them just after
    # the fixture then proves, by pid over a fresh ssh, that both workers are gone


def test_stop_climbs_the_ladder_to_kill(ssh_infra: SSHInfra, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that ignores end of stdin and SIGTERM is ended with SIGKILL."""
    monkeypatch.setattr(session_module, "EOF_GRACE", 0.5)
    monkeypatch.setattr(session_module, "SIGNAL_GRACE", 1.0)
    conn = HostConnection(resolve_host(None, ssh_infra.alias, None, parse_sshflags(ssh_infra.flags)))
    conn.acquire()
    try:
        conn.connect(Deadline(20))
        stubborn = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
        line = shell_command(["sh", "-c", stubborn], report_pid=True)
        session = WorkerSession.start(conn, line, "not-a-cookie", Deadline(20))
        assert session.stdout.readline() == b"ready\n"
        started = time.monotonic()
        session.stop(grace=0)
        assert time.monotonic() - started < 10
        assert alive_pids(ssh_infra, ssh_infra.alias, [session.ospid]) == []
        assert conn.active  # the session let go of it, the launch still holds it
    finally:
        conn.release()
    assert conn.closed
