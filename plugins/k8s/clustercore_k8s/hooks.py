"""Hook implementations of the Kubernetes plugin (entry point ``k8s``); each delegates.

Every hook answers only for a ``K8sManager`` (``@serves``), so the other
plugins (and the core's defaults) handle the rest. Nothing here
imports ``kubernetes``: that happens on the first launch.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.plugin import ClusterManager, WorkerConfig, hookimpl, request_exit, serves

from . import workers
from .connect import connect as connect_pod
from .manager import K8sManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"k8s": K8sManager}


@hookimpl
@serves(K8sManager)
def launch(manager: K8sManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
    from .launch import launch_workers  # with the Kubernetes client: paid by the first launch, not by discovery

    launch_workers(manager, params, launched, launch_ntfy)


@hookimpl
@serves(K8sManager)
def manage(manager: K8sManager, id: int, config: WorkerConfig, op: str) -> None:
    session = workers.session_of(config)
    if session is None:
        return
    if op == "register":
        workers.register(session, id, config)
    elif op == "finalize":
        workers.finalize(session, config)
    # "deregister": kill follows; "interrupt" reaches the worker as a message from the core


@hookimpl
@serves(K8sManager)
def kill(manager: K8sManager, pid: int, config: WorkerConfig) -> None:
    session = workers.session_of(config)
    if session is None:
        request_exit(pid)
    else:
        workers.kill(session, pid, config)


@hookimpl
@serves(K8sManager)
def connect(manager: K8sManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    session = workers.session_of(config)
    if session is None:
        raise ConnectionError(f"worker {pid} was not launched by a K8sManager (no pod in its WorkerConfig)")
    return connect_pod(session, pid, config)


@hookimpl
def cli_commands() -> dict[str, Any]:
    from .cli import main

    return {"k8s": main}
