"""The Local plugin: the conformance suite, plus what is particular to local processes."""

from __future__ import annotations

import os
from collections.abc import Callable

import cloudpickle
import pytest
from clustercore_local import LocalManager

import clustercore as cc
from clustercore.testing import ManagerConformance


@pytest.fixture(autouse=True)
def _ship_by_value(request: pytest.FixtureRequest) -> None:
    for module in (request.module, __import__("clustercore.testing", fromlist=["_"])):
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)


class TestLocalConformance(ManagerConformance):
    @pytest.fixture
    def make_manager(self) -> Callable[[int], cc.ClusterManager]:
        return lambda n: LocalManager(np=n)

    def bad_manager_arguments(self) -> list[Callable[[], object]]:
        return [lambda: LocalManager(np=0), lambda: LocalManager(np="2"), lambda: LocalManager(restrict="yes")]


def test_restrict_binds_loopback_only() -> None:
    pids = cc.addprocs(1)
    try:
        host, _ = cc.cluster.worker_from_id(pids[0]).connect_at
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


def test_workers_run_in_their_own_session() -> None:
    pids = cc.addprocs(1)
    try:
        assert cc.remotecall_fetch(os.getsid, pids[0], 0) != os.getsid(0)
    finally:
        cc.rmprocs(pids)
