"""Hook implementations of the Kubernetes plugin (entry point ``k8s``); each delegates.

Every hook returns ``None`` for managers that are not a ``K8sManager``, so
the other plugins (and the core's defaults) handle those. Nothing here
imports ``kubernetes``: that happens on the first launch.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore import ClusterManager, WorkerConfig, hookimpl

from .manager import K8sManager


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"k8s": K8sManager}


@hookimpl
def launch(
    manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> bool | None:
    if not isinstance(manager, K8sManager):
        return None
    from .launch import launch_workers

    launch_workers(manager, params, launched, launch_ntfy)
    return True


@hookimpl
def manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> bool | None:
    if not isinstance(manager, K8sManager):
        return None
    from . import workers

    session = workers.session_of(config)
    if session is None:
        return True
    if op == "register":
        workers.register(session, id, config)
    elif op == "finalize":
        workers.finalize(session, config)
    # "deregister": kill follows; "interrupt" reaches the worker as a message from the core
    return True


@hookimpl
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool | None:
    if not isinstance(manager, K8sManager):
        return None
    from clustercore.plugin import request_exit

    from . import workers

    session = workers.session_of(config)
    if session is None:
        request_exit(pid)
    else:
        workers.kill(session, pid, config)
    return True


@hookimpl
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any] | None:
    if not isinstance(manager, K8sManager):
        return None
    from .connect import connect as connect_pod
    from .workers import session_of

    session = session_of(config)
    if session is None:
        raise ConnectionError(f"worker {pid} was not launched by a K8sManager (no pod in its WorkerConfig)")
    return connect_pod(session, pid, config)


@hookimpl
def cli_commands() -> dict[str, Any]:
    from .cli import main

    return {"k8s": main}
