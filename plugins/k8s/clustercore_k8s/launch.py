"""Starting the worker pods: create them, watch them run, read each worker's address.

Each pod is handed to the core (one ``WorkerConfig``) as soon as its worker
prints its address, so the first workers join while others still start. A
pod still Pending after ``pending_timeout`` (or that fails to start a
worker) is deleted with a :class:`~clustercore_k8s.errors.PodWarning`
naming the reason; the launch fails only if fewer than ``min_workers``
start, listing every pod's reason. A cancelled launch (``addprocs`` gave up:
a failure elsewhere, the caller's Ctrl-C) stops creating pods, wakes every
starter and deletes each pod it made, waiting until the API server has.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from threading import Condition
from typing import Any

from clustercore.plugin import (
    LaunchCancelled,
    WorkerConfig,
    launch_cancelled,
    on_launch_cancelled,
    report_launched,
    worker_timeout,
)

from . import podspec
from . import session as sessions
from .errors import K8sError, K8sLaunchError, PodWarning
from .logstream import PodLog
from .manager import K8sManager
from .reasons import pending_reason
from .session import Session
from .tracker import PodState
from .workers import PodHandle, delete_and_wait

MAX_STARTER_THREADS = 64


def launch_workers(
    manager: K8sManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> None:
    session = sessions.acquire(manager)
    cancel = _Cancel(session, launch_ntfy)
    try:
        manifest = podspec.worker_pod(manager, params, session.pod_context())
        session.start()
        states, failures = _create_pods(session, manifest, manager.n, cancel)
        with ThreadPoolExecutor(min(len(states) or 1, MAX_STARTER_THREADS), "clustercore-k8s-start") as pool:
            outcomes = list(
                pool.map(lambda s: _start(session, manager, params, s, launched, launch_ntfy, cancel), states)
            )
        if cancel.is_set():
            raise LaunchCancelled(f"the launch of {manager.n} pods was cancelled; every pod it made was deleted")
        failures += [reason for reason in outcomes if reason is not None]
        started = len(states) - sum(reason is not None for reason in outcomes)
        if started < manager.required_workers:
            raise K8sLaunchError(
                f"only {started} of {manager.n} worker pods started in namespace {session.namespace} "
                f"(at least {manager.required_workers} needed):\n  " + "\n  ".join(failures)
            )
    finally:
        session.launch_done()


class _Cancel:
    """The launch's cancellation, as the pod starters see it: it wakes their waits on the
    pod watch and ends the log streams they read addresses from."""

    def __init__(self, session: Session, launch_ntfy: Condition) -> None:
        self.session = session
        self.event = launch_cancelled(launch_ntfy)
        self.logs: set[PodLog] = set()
        self._lock = threading.Lock()
        on_launch_cancelled(launch_ntfy, self._wake)

    def is_set(self) -> bool:
        return self.event.is_set()

    def reading(self, log: PodLog) -> None:
        with self._lock:
            self.logs.add(log)
        if self.is_set():
            log.close()

    def _wake(self) -> None:
        tracker = self.session.tracker
        with tracker.changed:
            tracker.changed.notify_all()
        with self._lock:
            logs = list(self.logs)
        for log in logs:
            log.close()


def _create_pods(
    session: Session, manifest: dict[str, Any], n: int, cancel: _Cancel
) -> tuple[list[PodState], list[str]]:
    """Create ``n`` pods from one manifest; stop at the first refusal (quota, admission) unless none exist."""
    states: list[PodState] = []
    for i in range(n):
        if cancel.is_set():
            break  # the pods made so far are deleted by their starters
        try:
            states.append(session.create_pod(manifest))
        except K8sError as exc:
            if not states:
                raise
            return states, [f"{n - i} pods not created: {exc}"]
    return states, []


def _start(
    session: Session,
    manager: K8sManager,
    params: dict[str, Any],
    state: PodState,
    launched: list[WorkerConfig],
    ntfy: Condition,
    cancel: _Cancel,
) -> str | None:
    """Bring one pod to a worker that printed its address; ``None``, or why it was given up on."""
    try:
        return _start_pod(session, manager, params, state, launched, ntfy, cancel)
    except LaunchCancelled:
        return "cancelled"  # reported as the launch was cancelled: the core deletes that pod
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the pod must not be left behind
        if cancel.is_set():
            return _drop(session, state)
        return _give_up(session, state, f"could not be started: {exc!r}")


def _start_pod(
    session: Session,
    manager: K8sManager,
    params: dict[str, Any],
    state: PodState,
    launched: list[WorkerConfig],
    ntfy: Condition,
    cancel: _Cancel,
) -> str | None:
    tracker = session.tracker
    timeout = manager.pending_timeout
    left = None if timeout is None else max(0.0, state.created + timeout - time.monotonic())
    started = tracker.wait(state, lambda s: s.running or s.ended is not None or cancel.is_set(), left)
    if cancel.is_set():
        return _drop(session, state)
    if not started:
        if session.closed:
            return _give_up(session, state, "the session closed")
        events = _events_quietly(session, state)
        reason = pending_reason(state.pod, events)
        return _give_up(session, state, f"still Pending after {timeout:g} s: {reason}")
    if state.ended is not None:
        return _give_up(session, state, f"ended before its worker started ({state.ended}){_output(session, state)}")
    try:
        log = PodLog(session.api, state.name)
    except K8sError as exc:
        return _give_up(session, state, str(exc))
    cancel.reading(log)
    wait = worker_timeout()
    address = log.read_address(wait)
    if cancel.is_set():
        log.close()
        return _drop(session, state)
    if address is None:
        log.close()
        tracker.wait(state, lambda s: s.ended is not None, 2.0)  # give a dying pod's status a moment to say why
        why = state.ended or f"its worker printed no address within {wait:g} s (CLUSTERCORE_WORKER_TIMEOUT)"
        return _give_up(session, state, f"did not start a worker: {why}{_output(session, state)}")
    config = WorkerConfig(
        io=log,
        host=state.pod_ip,
        port=address[1],
        userdata=state,
        process=PodHandle(session, state),
        enable_threaded_blas=bool(params.get("enable_threaded_blas")),
    )
    report_launched(launched, ntfy, config)
    return None


def _output(session: Session, state: PodState) -> str:
    lines = session.api.log_tail(state.name)
    return "; its output ends: " + " | ".join(lines) if lines else ""


def _events_quietly(session: Session, state: PodState) -> list[dict[str, Any]]:
    try:
        return session.api.pod_events(state.name, state.uid)
    except K8sError:
        return []


def _drop(session: Session, state: PodState) -> str:
    """The launch was cancelled: delete the pod (and wait for it), without a warning."""
    delete_and_wait(session, state)
    session.release(state.name)
    return "cancelled"


def _give_up(session: Session, state: PodState, why: str) -> str:
    reason = f"pod {state.name} {why}"
    warnings.warn(f"{reason}; it was deleted", PodWarning, stacklevel=2)
    delete_and_wait(session, state)
    session.release(state.name)
    return reason
