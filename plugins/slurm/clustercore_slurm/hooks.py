"""Hook implementations of the Slurm plugin (entry point ``slurm``); each delegates.

Every hook returns ``None`` for managers that are not a ``SlurmManager``,
so the other plugins (and the core's defaults) handle those.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore import ClusterManager, WorkerConfig, hookimpl

from . import workers
from .launch import launch_workers
from .manager import SlurmManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"slurm": SlurmManager}


@hookimpl
def launch(
    manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> bool | None:
    if not isinstance(manager, SlurmManager):
        return None
    launch_workers(manager, params, launched, launch_ntfy)
    return True


@hookimpl
def manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> bool | None:
    if not isinstance(manager, SlurmManager):
        return None
    if op == "register":
        workers.register(manager, id, config)
    elif op == "deregister":
        workers.deregister(manager, config)
    # "interrupt" arrives at the worker as a message from the core; "finalize" needs nothing here
    return True


@hookimpl
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool | None:
    if not isinstance(manager, SlurmManager):
        return None
    workers.kill(manager, pid, config)
    return True


@hookimpl
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any] | None:
    if not isinstance(manager, SlurmManager):
        return None
    return workers.connect(manager, pid, config)
