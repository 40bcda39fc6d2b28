"""Hook implementations of the Local plugin (entry point ``local``)."""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.plugin import ClusterManager, WorkerConfig, hookimpl, serves

from .manager import LocalManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"local": LocalManager}


@hookimpl
@serves(LocalManager)
def launch(manager: LocalManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
    manager.start_workers(params, launched, launch_ntfy)


@hookimpl
@serves(LocalManager)
def kill(manager: LocalManager, pid: int, config: WorkerConfig) -> None:
    manager.end_worker(pid, config)


@hookimpl
@serves(LocalManager)
def connect(manager: LocalManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return manager.connect_worker(pid, config)
