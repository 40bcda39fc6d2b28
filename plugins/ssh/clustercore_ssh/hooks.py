"""The plugin's hook implementations (entry point ``ssh`` in group ``clustercore``).

Each hook returns ``None`` for managers that are not :class:`SSHManager`, so
other plugins answer for theirs. paramiko is imported only when a hook runs
for an ``SSHManager``, never when the plugin is discovered.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.engine.hooks import hookimpl
from clustercore.engine.managers import ClusterManager, WorkerConfig

from .manager import SSHManager

EXIT_GRACE = 5.0


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"ssh": SSHManager}


@hookimpl
def launch(
    manager: ClusterManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> bool | None:
    if not isinstance(manager, SSHManager):
        return None
    from .launcher import launch_workers

    launch_workers(manager, params, launched, launch_ntfy)
    return True


@hookimpl
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any] | None:
    if not isinstance(manager, SSHManager):
        return None
    from .connect import connect_worker

    return connect_worker(manager, pid, config)


@hookimpl
def manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> bool | None:
    """``interrupt`` needs nothing here: the core delivers it as a message, which reaches the
    call in flight; a SIGINT sent over SSH as well could land in the worker's next call."""
    if not isinstance(manager, SSHManager):
        return None
    if op == "finalize":
        session = _session(config)
        if session is not None:
            session.close()
    return True


@hookimpl
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool | None:
    """Ask the worker to exit; then end it over SSH if it has not (EOF, TERM, KILL)."""
    if not isinstance(manager, SSHManager):
        return None
    from clustercore.plugin import request_exit

    request_exit(pid)
    session = _session(config)
    if session is not None:
        session.stop(grace=EXIT_GRACE)
    return True


def _session(config: WorkerConfig) -> Any:
    from .session import WorkerSession

    session = config.userdata
    return session if isinstance(session, WorkerSession) else None
