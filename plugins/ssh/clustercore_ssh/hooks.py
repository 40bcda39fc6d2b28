"""The plugin's hook implementations (entry point ``ssh`` in group ``clustercore``).

Each hook answers only for :class:`SSHManager` (``@serves``), so other plugins
answer for theirs. paramiko is imported only when a hook runs for an
``SSHManager``, never when the plugin is discovered; the launcher (the
heaviest module) is imported by the first launch, on the thread that called
``addprocs``.
"""

from __future__ import annotations

from threading import Condition
from typing import Any

from clustercore.plugin import ClusterManager, WorkerConfig, hookimpl, request_exit, serves

from .connect import connect_worker
from .manager import SSHManager
from .session import WorkerSession

EXIT_GRACE = 5.0


@hookimpl
def manager_types() -> dict[str, type[ClusterManager]]:
    return {"ssh": SSHManager}


@hookimpl
@serves(SSHManager)
def launch(manager: SSHManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
    from .launcher import launch_workers  # ~50 ms: paid by the first launch, not by discovery

    launch_workers(manager, params, launched, launch_ntfy)


@hookimpl
@serves(SSHManager)
def connect(manager: SSHManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return connect_worker(manager, pid, config)


@hookimpl
@serves(SSHManager)
def manage(manager: SSHManager, id: int, config: WorkerConfig, op: str) -> None:
    """``interrupt`` needs nothing here: the core delivers it as a message, which reaches the
    call in flight; a SIGINT sent over SSH as well could land in the worker's next call."""
    if op == "finalize":
        session = _session(config)
        if session is not None:
            session.close()


@hookimpl
@serves(SSHManager)
def kill(manager: SSHManager, pid: int, config: WorkerConfig) -> None:
    """Ask the worker to exit; then end it over SSH if it has not (EOF, TERM, KILL)."""
    request_exit(pid)
    session = _session(config)
    if session is not None:
        session.stop(grace=EXIT_GRACE)


def _session(config: WorkerConfig) -> WorkerSession | None:
    session = config.userdata
    return session if isinstance(session, WorkerSession) else None
