"""One worker pod's life after launch: register, the pod ending by itself, removal.

When a pod ends on its own (OOMKilled, Evicted, deleted, crashed) the core
hears it with the pod's termination reason (``worker_lost``), so the futures
waiting on its worker raise ``ProcessExitedException`` naming it. Both the
watch (the pod's status changed) and the link (the connection dropped, see
:class:`~clustercore_k8s.connect.PodSocket`) lead here; whichever comes first wins.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import TYPE_CHECKING

from clustercore.plugin import WorkerConfig, request_exit, worker_lost

from .errors import K8sError
from .podspec import LABEL_PID
from .tracker import PodState

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)
EXIT_GRACE = 5.0  # a removed worker's time to exit by itself before its pod is deleted
REASON_WAIT = 10.0  # after a link drops, how long to wait for the pod's status to say why
GONE_TIMEOUT = 60.0  # how long removal waits for the API server to delete the pod


def session_of(config: WorkerConfig) -> Session | None:
    """The session a worker's pod belongs to (kept in its ``WorkerConfig.process``)."""
    handle = config.process
    return handle.session if isinstance(handle, PodHandle) else None


def register(session: Session, pid: int, config: WorkerConfig) -> None:
    """Label the pod with its worker's pid; a pod that already ended takes its worker with it."""
    state: PodState = config.userdata
    state.pid = pid
    try:
        session.api.label_pod(state.name, {LABEL_PID: str(pid)})
    except K8sError as exc:
        log.warning("could not label pod %s with its worker pid %d: %s", state.name, pid, exc)
    pod_ended(state)  # it may have ended (or started being deleted) while the worker joined


def pod_ended(state: PodState) -> None:
    """From the watch: a registered worker's pod ended without being asked to."""
    if state.pid is None or state.removing or state.ended is None:
        return
    threading.Thread(
        target=worker_lost, args=(state.pid, state.ended), name=f"clustercore-k8s-end-{state.pid}", daemon=True
    ).start()


def link_dropped(session: Session, state: PodState, pid: int) -> None:
    """From the link: it dropped. If the pod is ending, close the link with the pod's reason."""
    if state.removing:
        return
    session.tracker.wait(state, lambda s: s.ended is not None or s.removing, REASON_WAIT)
    if state.ended is not None and not state.removing:
        worker_lost(pid, state.ended)


def kill(session: Session, pid: int, config: WorkerConfig) -> None:
    """Ask the worker to exit, then delete its pod and wait until the API server has removed it."""
    state: PodState = config.userdata
    session.tracker.mark_removing(state)
    request_exit(pid)
    session.tracker.wait(state, lambda s: s.ended is not None or s.gone, EXIT_GRACE)
    delete_and_wait(session, state)


def delete_and_wait(session: Session, state: PodState) -> None:
    """Delete the pod (at once if it has ended) and wait for the DELETED event."""
    session.tracker.mark_removing(state)
    try:
        present = session.api.delete_pod(state.name, grace_seconds=0 if state.ended else None)
    except K8sError as exc:
        log.warning("could not delete pod %s: %s", state.name, exc)
        return
    if present and not session.tracker.wait(state, lambda s: s.gone, GONE_TIMEOUT):
        log.warning("pod %s/%s was not deleted within %g s", session.namespace, state.name, GONE_TIMEOUT)
        return
    end_link(state)


def end_link(state: PodState) -> None:
    """The pod is gone: end the link to its worker, which may never see a FIN.

    The node tears down the pod's network namespace as it removes the pod; a FIN still
    queued behind unsent data there never leaves it, so without this the driver's side of
    the link stays open until TCP keepalive gives up (minutes). ``shutdown`` (not ``close``)
    wakes the reader with an EOF and leaves the descriptor to its owner.
    """
    link, state.link = state.link, None
    if link is not None:
        try:
            link.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by its owner, or never connected


def finalize(session: Session, config: WorkerConfig) -> None:
    state: PodState = config.userdata
    io = config.io
    if io is not None and hasattr(io, "close") and not state.gone:
        io.close()
    session.release(state.name)


class PodHandle:
    """``WorkerConfig.process``: the core calls ``kill()`` when a worker fails to join (or
    ``addprocs`` gave up); it returns once the API server has deleted the pod."""

    def __init__(self, session: Session, state: PodState) -> None:
        self.session = session
        self.state = state
        self._killed = False
        self._lock = threading.Lock()

    def kill(self) -> None:
        with self._lock:
            if self._killed:
                return
            self._killed = True
        delete_and_wait(self.session, self.state)
        self.session.release(self.state.name)
