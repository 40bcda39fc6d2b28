"""One manager's runtime: API connection, cluster id, cookie Secret, pod watch, live pods.

A session opens on a manager's first launch and closes, deleting the
cookie Secret and stopping the watch, when its last pod has been released
(removed, or given up on) and no launch is running. At interpreter exit,
whatever is still open is removed by label, after the core's own removal
of the workers.
"""

from __future__ import annotations

import atexit
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

import clustercore
from clustercore.plugin import worker_secret

from . import driverpod, podspec
from .kubeapi import KubeApi, load_connection
from .tracker import PodState, PodTracker
from .workers import pod_ended

if TYPE_CHECKING:
    from .manager import K8sManager

log = logging.getLogger(__name__)
Obj = dict[str, Any]

_open: set[Session] = set()
_open_lock = threading.Lock()
_atexit_registered = False


class Session:
    """Everything one ``K8sManager`` has running in the cluster."""

    def __init__(self, manager: K8sManager) -> None:
        self.manager = manager
        kubeconfig = None if manager.kubeconfig is None else str(manager.kubeconfig)
        connection = load_connection(kubeconfig, manager.context)
        self.api = KubeApi(connection, manager.namespace, pool_size=2 * manager.n + 8)
        self.namespace = self.api.namespace
        self.cluster_id = secrets.token_hex(4)
        self.secret_name = f"cc-cookie-{self.cluster_id}"
        self.direct = manager.transport == "pod-ip" or (manager.transport == "auto" and connection.in_cluster)
        self.driver_pod = driverpod.find(self.api)
        self.owner = driverpod.owner_reference(self.driver_pod, self.namespace)
        self.live: set[str] = set()  # pods created and not yet released
        self.launching = 0
        self.secret_created = False
        self.closed = False
        self.tracker = PodTracker(self.api, podspec.cluster_selector(self.cluster_id), self._pod_ended)

    def pod_context(self) -> podspec.PodContext:
        return podspec.PodContext(self.cluster_id, self.secret_name, driverpod.image(self.driver_pod), self.owner)

    def start(self) -> None:
        """Start watching the cluster's pods and create its cookie Secret (once)."""
        if not self.tracker.started:
            self.tracker.start()
        if not self.secret_created:
            self.api.create_secret(
                podspec.cookie_secret(self.secret_name, self.cluster_id, worker_secret(), self.owner)
            )
            self.secret_created = True

    def create_pod(self, manifest: Obj) -> PodState:
        created = self.api.create_pod(manifest)
        with self.manager.session_lock:
            self.live.add(created["metadata"]["name"])
        return self.tracker.add(created)

    def release(self, name: str) -> None:
        """The pod is gone (or being deleted) and needs nothing more from the session."""
        self.tracker.forget(name)
        with self.manager.session_lock:
            self.live.discard(name)
        self._close_if_idle()

    def launch_done(self) -> None:
        with self.manager.session_lock:
            self.launching -= 1
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        with self.manager.session_lock:
            if self.live or self.launching or self.closed:
                return
            self.closed = True
            if self.manager.session is self:
                self.manager.session = None
        self.close()

    def _pod_ended(self, state: PodState) -> None:
        pod_ended(state)

    def close(self) -> None:
        """Delete the cookie Secret, stop watching, end the API streams."""
        self.closed = True
        with _open_lock:
            _open.discard(self)
        self.tracker.stop()
        if self.secret_created:
            try:
                self.api.delete_secret(self.secret_name)
            except Exception as exc:  # noqa: BLE001 - cleanup can point at leftovers
                log.warning("could not delete the cookie Secret %s/%s: %s", self.namespace, self.secret_name, exc)
        self.api.close()

    def remove_everything(self) -> None:
        """Delete every pod of this cluster and its Secret now (interpreter exit)."""
        try:
            pods, _ = self.api.list_pods(podspec.cluster_selector(self.cluster_id))
            for pod in pods:
                self.api.delete_pod(pod["metadata"]["name"], grace_seconds=0)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not delete the worker pods of cluster %s: %s", self.cluster_id, exc)
        self.close()


def acquire(manager: K8sManager) -> Session:
    """The manager's session (opened if needed), held open until :meth:`Session.launch_done`."""
    with manager.session_lock:
        session = manager.session
        if session is not None and not session.closed:
            session.launching += 1
            return session
    session = Session(manager)
    with manager.session_lock:
        manager.session = session
        session.launching += 1
    _remember(session)
    return session


def _remember(session: Session) -> None:
    global _atexit_registered
    with _open_lock:
        _open.add(session)
        if not _atexit_registered:
            atexit.register(_at_exit)  # runs before the core's handler (LIFO), so it calls that first
            _atexit_registered = True


def _remove_all_workers() -> None:
    """At driver exit, before the core's own handler: remove every worker, briefly."""
    if clustercore.myid() != 1:
        return
    pids = [p for p in clustercore.procs() if p != 1]
    if not pids:
        return
    try:
        clustercore.rmprocs(pids, waitfor=5.0)
    except Exception:  # at exit: the pods are deleted below either way
        log.debug("removing the workers at exit failed", exc_info=True)


def _at_exit() -> None:
    _remove_all_workers()
    with _open_lock:
        left = list(_open)
    for session in left:
        session.remove_everything()
