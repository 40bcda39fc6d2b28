"""Hook implementations of the Slurm plugin (entry point ``slurm``); each delegates.

Every hook answers only for a ``SlurmManager`` (``@serves``), so the other
plugins (and the core's defaults) handle the rest.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.plugin import ClusterManager, WorkerConfig, hookimpl, serves

from . import workers
from .launch import launch_workers
from .manager import SlurmManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"slurm": SlurmManager}


@hookimpl
@serves(SlurmManager)
def launch(manager: SlurmManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
    launch_workers(manager, params, launched, launch_ntfy)


@hookimpl
@serves(SlurmManager)
def manage(manager: SlurmManager, id: int, config: WorkerConfig, op: str) -> None:
    if op == "register":
        workers.register(manager, id, config)
    elif op == "deregister":
        workers.deregister(manager, config)
    # "interrupt" arrives at the worker as a message from the core; "finalize" needs nothing here


@hookimpl
@serves(SlurmManager)
def kill(manager: SlurmManager, pid: int, config: WorkerConfig) -> None:
    workers.kill(manager, pid, config)


@hookimpl
@serves(SlurmManager)
def connect(manager: SlurmManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return workers.connect(manager, pid, config)
