"""One worker's life after launch: connect, register, removal, and making sure its task ends."""

from __future__ import annotations

import logging
import socket
from typing import Any

from clustercore.plugin import WorkerConfig, default_connect, request_exit

from .manager import SlurmManager
from .step import drop_connection

log = logging.getLogger(__name__)

EXIT_GRACE = 5.0  # how long a removed worker gets to exit before its process is killed on its node


def connect(manager: SlurmManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    """The core's TCP connect (with keepalive), the socket remembered so a dead task's link can be cut."""
    instream, outstream = default_connect(pid, config)
    found = manager.steps.lookup(config)
    if isinstance(instream, socket.socket):
        if found is not None:
            step, task = found
            with step.changed:
                task.sock = instream
                ended = task.ended
            if ended:  # it died while we connected: the core must see the link drop
                drop_connection(instream)
    return instream, outstream


def register(manager: SlurmManager, pid: int, config: WorkerConfig) -> None:
    found = manager.steps.lookup(config)
    if found is not None:
        step, task = found
        with step.changed:
            task.pid = pid


def deregister(manager: SlurmManager, config: WorkerConfig) -> None:
    found = manager.steps.lookup(config)
    if found is not None:
        step, task = found
        manager.steps.release(step, task, wait=False)


def kill(manager: SlurmManager, pid: int, config: WorkerConfig) -> None:
    """Ask the worker to exit; kill it on its node if it does not; end the step after the last one."""
    found = manager.steps.lookup(config)
    try:
        request_exit(pid)
    except Exception as exc:  # noqa: BLE001 - the link may already be gone; the task is checked below
        log.debug("request_exit(%s): %s", pid, exc)
    if found is None:
        return
    step, task = found
    step.kill_task(task, EXIT_GRACE)
    manager.steps.release(step, task, wait=True)
    manager.steps.forget(config)
