"""What pid 1 asks workers to do as the cluster changes: learn of new peers, connect
to them, forget one that left, exit.

These run on workers, so they live apart from :mod:`clustercore.processes`
(the driver's side): a worker unpickling them imports only this. On pid 1, a
worker that left is announced to the others from here.
"""

from __future__ import annotations

from . import cluster, peers
from .callrunner import internal, quick_internal
from .cluster import PGRP
from .messages import PeerInfo, PeerTable
from .requests import broadcast_remote_do


@quick_internal
def learn_peers(news: list[PeerInfo] | PeerTable) -> None:
    cluster.add_peers(news)
    if PGRP.allowed_peers is not None and isinstance(news, list):  # custom: pid 1 sent only those we may reach
        PGRP.allowed_peers.update(p.pid for p in news)


@internal
def connect_to_lower() -> None:
    """Open links to every known worker with a lower pid (higher pids dial lower ones)."""
    for pid in sorted(cluster.procs()):
        if 1 < pid < PGRP.myid:
            peers.connection_to(pid)


@internal
def forget_peer(pid: int) -> None:
    peers.deregister_worker(pid, "removed by pid 1")


def _tell_peers_left(pid: int) -> None:
    """On pid 1: the other workers forget ``pid`` (they may hold lazy links to it)."""
    others = [p for p in cluster.procs() if p != 1]
    if others and PGRP.topology != "master_worker":
        broadcast_remote_do(forget_peer, others, pid)


cluster.on_worker_left(_tell_peers_left)
