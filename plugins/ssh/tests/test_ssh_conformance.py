"""The core's manager conformance suite, run against SSHManager on the loopback sshd and on the hosts."""

from __future__ import annotations

import socket
from collections.abc import Callable

import psutil
import pytest
from clustercore_ssh import SSHManager
from ssh_testing import SSHInfra, TestHosts, alive_pids

import clustercore as cc
from clustercore.testing import ManagerConformance

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


class _OverSSH(ManagerConformance):
    @pytest.fixture(autouse=True)
    def _infra(self, ssh_infra: SSHInfra) -> None:
        self.infra = ssh_infra

    def process_alive(self, hostname: str, ospid: int) -> bool:
        alias = self.infra.alias if hostname == socket.gethostname() else hostname
        return alive_pids(self.infra, alias, [ospid]) == [ospid]

    def leftovers(self, tag: str) -> list[str]:
        """Tagged processes (the hosts share this machine's processes), and SSH connections."""
        ports = {self.infra.port, 22}
        ssh = [
            f"SSH connection to {c.raddr.ip}:{c.raddr.port}"
            for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port in ports and c.status == "ESTABLISHED"
        ]
        return super().leftovers(tag) + ssh

    def bad_manager_arguments(self) -> list[Callable[[], object]]:
        return [
            lambda: SSHManager(machines=["host:port"]),
            lambda: SSHManager(machines=[("host", 0)]),
            lambda: SSHManager(machines=["host"], sshflags="-L 1:x:2"),
            lambda: SSHManager(machines=["host"], max_parallel=0),
            lambda: cc.addprocs(["host 10.0.0.1:x"]),
        ]


class TestLoopbackConformance(_OverSSH):
    nworkers = 3

    @pytest.fixture
    def make_manager(self, ssh_infra: SSHInfra) -> Callable[[int], cc.ClusterManager]:
        return lambda n: SSHManager(machines=[(ssh_infra.alias, n)], sshflags=ssh_infra.flags)


@pytest.mark.hosts
class TestHostsConformance(_OverSSH):
    nworkers = 3

    @pytest.fixture
    def make_manager(self, ssh_infra: SSHInfra, test_hosts: TestHosts) -> Callable[[int], cc.ClusterManager]:
        return lambda n: SSHManager(machines=[test_hosts.aliases[i % 3] for i in range(n)], sshflags=ssh_infra.flags)


@pytest.mark.hosts
class TestTunnelConformance(_OverSSH):
    @pytest.fixture
    def make_manager(self, ssh_infra: SSHInfra, test_hosts: TestHosts) -> Callable[[int], cc.ClusterManager]:
        hosts = test_hosts.aliases
        return lambda n: SSHManager(machines=[hosts[i % 2] for i in range(n)], sshflags=ssh_infra.flags, tunnel=True)
