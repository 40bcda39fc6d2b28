"""What pid 1 asks workers to do as the cluster changes: learn of new peers, connect
to them, forget one that left, exit.

These run on workers, so they live apart from :mod:`clustercore.processes`
(the driver's side): a worker unpickling them imports only this.
"""

from __future__ import annotations

from . import cluster
from .cluster import PGRP
from .messages import PeerInfo
from .remoterefs import _internal


@_internal
def learn_peers(peers: list[PeerInfo]) -> None:
    cluster.add_peers(peers)
    if PGRP.allowed_peers is not None:  # custom topology: pid 1 sent only those we may reach
        PGRP.allowed_peers.update(p.pid for p in peers)


@_internal
def connect_to_lower() -> None:
    """Open links to every known worker with a lower pid (higher pids dial lower ones)."""
    for pid in sorted(cluster.procs()):
        if 1 < pid < PGRP.myid:
            cluster.connection_to(pid)


@_internal
def forget_peer(pid: int) -> None:
    cluster.deregister_worker(pid, "removed by pid 1")


@_internal
def _exit_worker() -> None:
    from .worker import exit_worker

    exit_worker("asked to exit by pid 1")
