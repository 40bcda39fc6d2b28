"""Hook implementations of the elastic plugin (entry point ``elastic``)."""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.plugin import ClusterManager, WorkerConfig, hookimpl, serves

from .manager import ElasticManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"elastic": ElasticManager}


@hookimpl
@serves(ElasticManager)
def launch(
    manager: ElasticManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> None:
    manager.launch_workers(params, launched, launch_ntfy)


@hookimpl
@serves(ElasticManager)
def connect(manager: ElasticManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return manager.connect_worker(pid, config)


@hookimpl
@serves(ElasticManager)
def manage(manager: ElasticManager, id: int, config: WorkerConfig, op: str) -> None:
    if op == "deregister":
        manager.left(id)


@hookimpl
@serves(ElasticManager)
def kill(manager: ElasticManager, pid: int, config: WorkerConfig) -> None:
    manager.end_worker(pid)


@hookimpl
def cli_commands() -> dict[str, Any]:
    from .worker import main

    return {"join": main}
