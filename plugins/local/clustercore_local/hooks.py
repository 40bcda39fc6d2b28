"""Hook implementations of the Local plugin (entry point ``local``)."""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore import ClusterManager, WorkerConfig, hookimpl

from .manager import LocalManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"local": LocalManager}


@hookimpl
def launch(
    manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> bool | None:
    if not isinstance(manager, LocalManager):
        return None
    manager.start_workers(params, launched, launch_ntfy)
    return True


@hookimpl
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool | None:
    if not isinstance(manager, LocalManager):
        return None
    manager.end_worker(pid, config)
    return True


@hookimpl
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any] | None:
    if not isinstance(manager, LocalManager):
        return None
    return manager.connect_worker(pid, config)
