"""clustercore-elastic: workers started by anyone who holds the cookie join a running cluster
(Julia's ``ElasticManager``, ClusterManagers.jl).

Driver::

    m = clustercore_elastic.listen("0.0.0.0:9009", on_join=print)
    m.wait_for(4, timeout=600)

Worker, anywhere that reaches the driver::

    clustercore worker --join driver-host:9009 --cookie-file ~/.clustercore-cookie
"""

from __future__ import annotations

from collections.abc import Callable

import clustercore

from .manager import ElasticManager, managers
from .worker import JoinError, join

__all__ = ["ElasticManager", "JoinError", "join", "listen", "managers"]


def listen(
    address: str | tuple[str, int] = ("127.0.0.1", 9009),
    *,
    on_join: Callable[[int], object] | None = None,
    topology: str = "all_to_all",
    lazy: bool = True,
    handshake_timeout: float = 10.0,
    max_pending: int = 128,
) -> ElasticManager:
    """Start an :class:`ElasticManager` on ``address`` (``clustercore.addprocs(manager)``)
    and return it: ``manager.address``, ``manager.wait_for(n, timeout)``, ``manager.close()``."""
    manager = ElasticManager(
        address,
        on_join=on_join,
        topology=topology,
        lazy=lazy,
        handshake_timeout=handshake_timeout,
        max_pending=max_pending,
    )
    clustercore.addprocs(manager, topology=topology, lazy=lazy)
    return manager
