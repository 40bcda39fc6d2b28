"""The cluster's pods as the API server reports them, kept current by one watch.

One thread per cluster lists the pods with the cluster's label, then
watches from that list's resourceVersion, resuming after the server ends a
watch and listing again after a 410. Threads that need a pod to reach a
state wait on one condition variable; nothing polls. When a pod ends (or
starts being deleted) ``on_ended`` is called with its state, outside the
lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .kubeapi import Gone, KubeApi
from .reasons import termination_reason

log = logging.getLogger(__name__)
Obj = dict[str, Any]
WATCH_SECONDS = 300  # the server ends watches after minutes anyway; resume from the last version
RETRY_SECONDS = 1.0


@dataclass(eq=False)
class PodState:
    """One worker pod: what the last event said, and what the plugin knows about it."""

    name: str
    uid: str
    created: float = field(default_factory=time.monotonic)
    phase: str = "Pending"
    pod_ip: str | None = None
    ended: str | None = None  # why it ended (or is being deleted), once it has
    gone: bool = False  # the API server deleted it
    removing: bool = False  # the plugin is removing it: its end is expected
    pid: int | None = None  # its worker's pid, once registered
    link: Any = None  # the driver's socket to its worker, once connected
    pod: Obj = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.pod_ip) and self.ended is None


class PodTracker:
    """Watches the pods matching ``selector``; ``wait`` blocks until one reaches a state."""

    def __init__(self, api: KubeApi, selector: str, on_ended: Callable[[PodState], None]) -> None:
        self.api = api
        self.selector = selector
        self.on_ended = on_ended
        self.pods: dict[str, PodState] = {}
        self.changed = threading.Condition()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        version = self._relist()
        self._thread = threading.Thread(target=self._run, args=(version,), name="clustercore-k8s-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self.changed:
            self.changed.notify_all()

    def add(self, pod: Obj) -> PodState:
        """Track a pod just created (the watch may already have seen it)."""
        meta = pod["metadata"]
        with self.changed:
            state = self.pods.get(meta["name"])
            if state is None:
                state = self.pods[meta["name"]] = PodState(meta["name"], meta["uid"])
                self._update(state, pod, deleted=False)
            return state

    def mark_removing(self, state: PodState) -> None:
        """The plugin is removing this pod: its end is expected (waiters are told)."""
        with self.changed:
            state.removing = True
            self.changed.notify_all()

    def forget(self, name: str) -> None:
        with self.changed:
            self.pods.pop(name, None)

    def wait(self, state: PodState, done: Callable[[PodState], bool], timeout: float | None) -> bool:
        """Wait until ``done(state)`` holds (``True``) or ``timeout`` s pass or tracking stops (``False``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while not done(state):
                left = None if deadline is None else deadline - time.monotonic()
                if self._stopped.is_set() or (left is not None and left <= 0):
                    return False
                self.changed.wait(left)
            return True

    # --- the watch ------------------------------------------------------------------------

    def _run(self, version: str) -> None:
        while not self._stopped.is_set():
            try:
                for kind, pod in self.api.watch_pods(self.selector, version, WATCH_SECONDS):
                    version = (pod.get("metadata") or {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        self._apply(kind, pod)
                    if self._stopped.is_set():
                        return
            except Gone:
                version = self._relist_quietly() or version
            except Exception as exc:  # noqa: BLE001 - a broken stream must not end tracking
                if self._stopped.is_set():
                    return
                log.warning("watching the worker pods failed (%s); resuming", exc)
                self._stopped.wait(RETRY_SECONDS)  # back off before reconnecting
                version = self._relist_quietly() or version

    def _relist_quietly(self) -> str | None:
        try:
            return self._relist()
        except Exception as exc:  # noqa: BLE001
            log.debug("listing the worker pods failed: %s", exc)
            return None

    def _relist(self) -> str:
        """List the pods; those no longer listed are gone. Returns the list's resourceVersion."""
        items, version = self.api.list_pods(self.selector)
        listed = {p["metadata"]["name"] for p in items}
        for pod in items:
            self._apply("MODIFIED", pod)
        with self.changed:
            vanished = [s for name, s in self.pods.items() if name not in listed and not s.gone]
        for state in vanished:
            self._apply("DELETED", state.pod or {"metadata": {"name": state.name, "uid": state.uid}})
        return version

    def _apply(self, kind: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        with self.changed:
            state = self.pods.get(meta.get("name", ""))
            if state is None:
                if kind == "DELETED" or not meta.get("uid"):
                    return
                state = self.pods[meta["name"]] = PodState(meta["name"], meta["uid"])
            elif meta.get("uid") and meta["uid"] != state.uid:
                return  # another pod that had the same name
            newly_ended = self._update(state, pod, deleted=kind == "DELETED")
            self.changed.notify_all()
        if newly_ended:
            try:
                self.on_ended(state)
            except Exception:
                log.exception("handling the end of pod %s failed", state.name)

    def _update(self, state: PodState, pod: Obj, deleted: bool) -> bool:
        status = pod.get("status") or {}
        if status:
            state.pod = pod
            state.phase = status.get("phase") or state.phase
            state.pod_ip = status.get("podIP") or state.pod_ip
        state.gone = state.gone or deleted
        if state.ended is None:
            state.ended = termination_reason(state.pod or pod, deleted)
            return state.ended is not None
        return False
