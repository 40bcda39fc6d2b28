"""Topologies: who may call whom (Julia's test/topology.jl, ported)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from threading import Condition
from typing import Any

import pytest

import clustercore as cc
from clustercore.engine import cluster
from clustercore.engine.launching import worker_command, worker_environment


def connected_peers(pid: int) -> list[int]:
    """Pids that worker ``pid`` has an open link to."""
    return cc.remotecall_fetch(
        lambda: sorted(p for p, w in cluster.PGRP.workers.items() if w.conn is not None and not w.conn.closed),
        pid,
    )


def test_all_to_all_is_lazy_by_default(fresh: None) -> None:
    a, b, c = cc.addprocs(3)
    assert connected_peers(a) == [1]  # nobody dialed yet
    assert cc.remotecall_fetch(lambda: cc.remotecall_fetch(cc.myid, c), a) == c
    assert connected_peers(a) == [1, c]
    assert b not in connected_peers(c)


def test_all_to_all_not_lazy_connects_every_pair(fresh: None) -> None:
    pids = cc.addprocs(3, lazy=False)
    for p in pids:
        assert connected_peers(p) == [1, *[q for q in pids if q != p]]


def test_each_worker_knows_every_other_after_each_batch_and_removal(fresh: None) -> None:
    # A batch's workers are told the older workers as they join and their batch mates
    # after; removed workers are forgotten by those that stay.
    first = cc.addprocs(2)
    second = cc.addprocs(3)
    everyone = [1, *first, *second]
    assert all(cc.remotecall_fetch(cc.procs, p) == everyone for p in everyone[1:])
    assert cc.remotecall_fetch(lambda: cc.remotecall_fetch(cc.myid, first[0]), second[-1]) == first[0]
    assert cc.remotecall_fetch(lambda: cc.remotecall_fetch(cc.myid, second[-1]), first[0]) == second[-1]
    cc.rmprocs([first[1], *second[:2]])
    staying = [1, first[0], second[2]]
    deadline = time.monotonic() + 10  # the news is a remote_do: it may still be running
    while time.monotonic() < deadline and any(cc.remotecall_fetch(cc.procs, p) != staying for p in staying[1:]):
        time.sleep(0.05)
    assert all(cc.remotecall_fetch(cc.procs, p) == staying for p in staying[1:])


def _peer_news(gone: int) -> tuple[bool, bool]:
    """On a worker: whether it has peers it was told of but has not read, and whether it
    has heard that ``gone`` left."""
    from clustercore.engine.cluster import PGRP

    return bool(PGRP.unread_peers), gone in PGRP.exited


def test_a_worker_removed_before_its_peers_read_them_stays_removed(fresh: None) -> None:
    # Workers keep the peers pid 1 tells them of as one table, read on first need: the
    # news that one of them left may come first, and reading the table must not bring it back.
    first = cc.addprocs(2)
    second = cc.addprocs(2)
    gone = first[1]
    cc.rmprocs(gone)
    deadline = time.monotonic() + 10  # the news is a remote_do: it may still be running
    while time.monotonic() < deadline and not cc.remotecall_fetch(_peer_news, second[0], gone)[1]:
        time.sleep(0.05)
    assert cc.remotecall_fetch(_peer_news, second[0], gone) == (True, True)
    assert cc.remotecall_fetch(cc.procs, second[0]) == [1, first[0], *second]
    with pytest.raises(cc.RemoteException, match="ProcessExitedException"):
        cc.remotecall_fetch(lambda p: cc.remotecall_fetch(cc.myid, p), second[0], gone)


def test_a_table_of_peers_that_cannot_be_read_costs_only_itself(fresh: None) -> None:
    # A worker keeps tables of peers unread until it needs one: one that does not inflate
    # (or would inflate past the cap) is dropped when read, the others queued with it are not.
    import zlib

    from clustercore.engine.membership import learn_peers
    from clustercore.engine.messages import PeerInfo, PeerTable

    def learn_then_look() -> list[bool]:
        learn_peers(PeerTable(b"not zlib"))
        learn_peers(PeerTable(zlib.compress(bytes(1 << 28))))  # a 256 MiB bomb: refused, not inflated
        learn_peers(PeerTable.of([PeerInfo(97, ("127.0.0.1", 1), "elsewhere", None)]))
        return [cluster.lookup_worker(97) is not None, 97 in cc.procs()]

    (w,) = cc.addprocs(1)
    assert cc.remotecall_fetch(learn_then_look, w) == [True, True]


def test_master_worker_forbids_worker_to_worker(fresh: None) -> None:
    a, b = cc.addprocs(2, topology="master_worker")
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b)
    assert "master_worker" in str(info.value)
    assert cc.remotecall_fetch(cc.procs, a) == [1, a]
    assert cc.remotecall_fetch(cc.myid, b) == b


def test_topology_cannot_change_while_workers_exist(fresh: None) -> None:
    cc.addprocs(1)
    with pytest.raises(ValueError, match="topology is 'all_to_all'"):
        cc.addprocs(1, topology="master_worker")


class IdentManager(cc.ClusterManager):
    """Local workers with idents: worker k connects to the idents listed for it."""

    def __init__(self, links: dict[int, list[int]]) -> None:
        self.links = links
        self.processes: list[subprocess.Popen[bytes]] = []

    def launch(self, params: dict[str, Any], launched: list[cc.WorkerConfig], launch_ntfy: Condition) -> None:
        for ident, connect_to in self.links.items():
            proc = subprocess.Popen(
                worker_command(params, bind_to="127.0.0.1"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**__import__("os").environ, **worker_environment(params)},
            )
            assert proc.stdin is not None
            proc.stdin.write((cc.cluster_cookie() + "\n").encode())
            proc.stdin.close()
            self.processes.append(proc)
            with launch_ntfy:
                launched.append(cc.WorkerConfig(io=proc.stdout, process=proc, ident=ident, connect_idents=connect_to))
                launch_ntfy.notify_all()

    def manage(self, id: int, config: cc.WorkerConfig, op: str) -> None:
        pass


@pytest.fixture
def ring(fresh: None) -> Iterator[dict[int, int]]:
    """Four workers in a ring: ident k connects to ident k+1 (Julia's topology test)."""
    links = {0: [1], 1: [2], 2: [3], 3: []}
    pids = cc.addprocs(IdentManager(links), topology="custom")
    yield dict(enumerate(pids))  # launched, and so numbered, in ident order


def _linked_now() -> tuple[list[int], bool]:
    """On a worker: the pids it has a live link to, and whether it holds an unread PeerTable."""
    from clustercore.engine.cluster import PGRP

    live = sorted(p for p, w in PGRP.workers.items() if w.conn is not None and not w.conn.closed)
    return live, bool(PGRP.unread_peers)


def test_custom_topology_links_its_pairs_as_workers_join(ring: dict[int, int]) -> None:
    # A joining worker dials those already there (joins overlap: some may not be yet) that
    # it is linked with, and is told of those only: the cluster's topology before this
    # launch must not decide what it gets.
    for k in range(4):
        live, unread = cc.remotecall_fetch(_linked_now, ring[k])
        neighbours = {ring[j] for j in (k - 1, k + 1) if j in ring}
        assert not unread and set(live) <= {1, *neighbours}, (k, live)


def test_custom_topology_connects_only_listed_pairs(ring: dict[int, int]) -> None:
    def reach(src: int, dst: int) -> bool:
        try:
            return cc.remotecall_fetch(lambda d: cc.remotecall_fetch(cc.myid, d) == d, src, dst)
        except cc.RemoteException as exc:
            assert "custom" in str(exc)
            return False

    for i in range(4):
        for j in range(4):
            if i != j:
                linked = j == i + 1 or i == j + 1
                assert reach(ring[i], ring[j]) == linked, (i, j)
