"""The pids addprocs returns follow the machine list: machine by machine, then worker by worker."""

from __future__ import annotations

import pytest
from ssh_testing import Launched, SSHInfra, TestHosts

import clustercore as cc

pytestmark = [pytest.mark.sshd, pytest.mark.hosts, pytest.mark.timeout(90)]


def test_pids_follow_the_machine_list(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    a, b, c = test_hosts.aliases[:3]
    for machines, expected, max_parallel in (
        ([(a, 4), b], [a, a, a, a, b], 1),  # a's sessions start one by one: b's is ready long before
        ([c, (a, 3), b], [c, a, a, a, b], 10),
        ([(b, 2), c, (a, 2)], [b, b, c, a, a], 10),
    ):
        pids = cc.addprocs(machines, sshflags=ssh_infra.flags, max_parallel=max_parallel)
        where = cluster.record(pids)
        assert [where[p].hostname for p in pids] == expected
        assert [cc.worker_info(p).host for p in pids] == expected
        assert {cc.worker_info(p).manager for p in pids} == {"ssh"}
        cc.rmprocs(pids)
