"""The Local plugin: the conformance suite, plus what is particular to local processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from clustercore_local import LocalManager, forkserver

import clustercore as cc
from clustercore.testing import ManagerConformance, pid_alive, running_driver, wait_until_gone, worker_info


class TestLocalConformance(ManagerConformance):
    @pytest.fixture
    def make_manager(self) -> Callable[[int], cc.ClusterManager]:
        return lambda n: LocalManager(np=n)

    def bad_manager_arguments(self) -> list[Callable[[], object]]:
        return [lambda: LocalManager(np=0), lambda: LocalManager(np="2"), lambda: LocalManager(restrict="yes")]

    def leftovers(self, tag: str) -> list[str]:
        """A forked worker has its fork server's environment, not the launch's: every child
        of a fork server is a worker (none may be left), and a server is no leftover."""
        servers = {server.process.pid for server in forkserver._servers.values() if server.alive()}
        found = [what for what in super().leftovers(tag) if int(what.split()[1]) not in servers]
        return found + [f"forked worker {p}" for server in servers for p in _children(server)]


class TestLocalSpawnConformance(TestLocalConformance):
    @pytest.fixture
    def make_manager(self) -> Callable[[int], cc.ClusterManager]:
        return lambda n: LocalManager(np=n, start_method="spawn")


def _children(ospid: int) -> list[int]:
    try:
        with open(f"/proc/{ospid}/task/{ospid}/children") as f:
            return [int(p) for p in f.read().split() if pid_alive(int(p))]
    except OSError:
        return []


def test_restrict_binds_loopback_only() -> None:
    pids = cc.addprocs(1)
    try:
        host, _ = worker_info(pids[0]).connect_at
        assert host == "127.0.0.1"
    finally:
        cc.rmprocs(pids)


def test_unrestricted_workers_listen_on_all_interfaces() -> None:
    pids = cc.addprocs(1, restrict=False)
    try:
        listening = cc.remotecall_fetch(
            lambda: [s for s in open("/proc/net/tcp").read().splitlines()[1:] if s.split()[3] == "0A"], pids[0]
        )
        assert any(line.split()[1].startswith("00000000:") for line in listening)
    finally:
        cc.rmprocs(pids)


def _link_family(pid: int) -> socket.AddressFamily:
    link = worker_info(pid).link
    assert link is not None
    return link.family


def test_forked_workers_are_reached_over_a_unix_socket_pair() -> None:
    a, b = cc.addprocs(2)
    try:
        assert _link_family(a) == _link_family(b) == socket.AF_UNIX
        assert cc.worker_id_from_socket(worker_info(a).link) == a
        # workers on one host reach each other over their abstract Unix sockets
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) == b
        assert cc.remotecall_fetch(_link_family, a, b) == socket.AF_UNIX
        assert cc.remotecall_fetch(_link_family, b, a) == socket.AF_UNIX
        assert cc.remotecall_fetch(_link_family, a, 1) == socket.AF_UNIX
    finally:
        cc.rmprocs([a, b])


def test_spawned_workers_get_a_socket_pair_too() -> None:
    a, b = cc.addprocs(2, start_method="spawn")
    try:
        assert _link_family(a) == _link_family(b) == socket.AF_UNIX
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) == b
        assert cc.remotecall_fetch(_link_family, a, b) == socket.AF_UNIX
    finally:
        cc.rmprocs([a, b])


def test_a_worker_given_a_bad_link_fd_says_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clustercore", "worker", "--link-fd", "987"],
        input="cookie\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--link-fd 987 is not an open socket" in result.stderr


def test_workers_run_in_their_own_session() -> None:
    pids = cc.addprocs(1)
    try:
        assert cc.remotecall_fetch(os.getsid, pids[0], 0) != os.getsid(0)
    finally:
        cc.rmprocs(pids)


def test_forked_workers_get_their_environment_and_directory(tmp_path: os.PathLike[str]) -> None:
    pids = cc.addprocs(2, env={"CC_FORKED": "yes"}, dir=str(tmp_path))
    try:
        for pid in pids:
            facts = cc.remotecall_fetch(lambda: (os.getcwd(), os.environ.get("CC_FORKED"), os.getppid()), pid)
            assert facts[:2] == (str(tmp_path), "yes")
            assert facts[2] != os.getpid()  # forked by the fork server, not by us
    finally:
        cc.rmprocs(pids)


def test_a_forked_worker_lacks_what_its_environment_lacks() -> None:
    # One fork server serves launches with other variables: it works out what to unset and
    # set once per launch, and each child applies just that.
    first = cc.addprocs(1, env={"CC_ONLY_FIRST": "1"})
    second = cc.addprocs(1, env={"CC_ONLY_SECOND": "2"})
    try:
        seen = [
            cc.remotecall_fetch(lambda: (os.environ.get("CC_ONLY_FIRST"), os.environ.get("CC_ONLY_SECOND")), p)
            for p in (*first, *second)
        ]
        assert seen == [("1", None), (None, "2")]
        assert len({cc.remotecall_fetch(os.getppid, p) for p in (*first, *second)}) == 1  # one fork server
    finally:
        cc.rmprocs(first + second)


def test_spawn_start_method_and_custom_interpreter_flags() -> None:
    pids = cc.addprocs(LocalManager(np=1, start_method="spawn"))
    pids += cc.addprocs(1, exeflags=["-X", "utf8"])  # a custom command line always spawns
    try:
        assert [cc.remotecall_fetch(os.getppid, p) for p in pids] == [os.getpid(), os.getpid()]
    finally:
        cc.rmprocs(pids)
    with pytest.raises(ValueError, match="start_method"):
        LocalManager(start_method="vfork")


def test_fork_server_ends_with_the_driver() -> None:
    setup = """
        import os, clustercore as cc
        from clustercore_local import forkserver
        pid = cc.addprocs(1)[0]
        report = [next(iter(forkserver._servers.values())).process.pid, cc.remotecall_fetch(os.getpid, pid)]
    """
    with running_driver(setup) as (driver, (server, worker)):
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_until_gone([server, worker]) == []


_FIRST_CALL_NEEDS = ["cloudpickle", "inspect", "logging", "traceback"]
_NEVER_NEEDED = ["asyncio", "http.server", "ssl"]


def test_a_forked_worker_starts_with_what_its_first_call_needs_and_no_more() -> None:
    # A worker's first call by value imports cloudpickle and what it brings (~40 ms of
    # CPU, most of a first pmap on hundreds of workers): the fork server imports it once
    # for all. What serving never needs it leaves out: the server forks every worker.
    pids = cc.addprocs(2)
    try:
        query = f"[m for m in {_FIRST_CALL_NEEDS + _NEVER_NEEDED!r} if m in __import__('sys').modules]"
        assert cc.remotecall_fetch(eval, pids[0], query) == _FIRST_CALL_NEEDS  # eval: a builtin, nothing loads for it
        assert cc.remotecall_fetch(lambda: cc.remotecall_fetch(cc.myid, pids[1]), pids[0]) == pids[1]  # all works
    finally:
        cc.rmprocs(pids)


def test_worker_info_names_host_manager_and_userdata() -> None:
    pids = cc.addprocs(2)
    try:
        for pid in pids:
            info = cc.worker_info(pid)
            assert (info.pid, info.manager, info.host) == (pid, "local", socket.gethostname())
            assert info.ospid == cc.remotecall_fetch(os.getpid, pid)
            assert isinstance(info.userdata, dict)
        assert cc.worker_info(1).manager == ""  # the driver itself
        with pytest.raises(ValueError):
            cc.worker_info(10**6)
    finally:
        cc.rmprocs(pids)
    with pytest.raises(cc.ProcessExitedException):
        cc.worker_info(pids[0])
