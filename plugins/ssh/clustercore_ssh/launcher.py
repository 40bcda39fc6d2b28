"""``launch`` for :class:`SSHManager`: every host at once, every worker of a host on its own channel.

Per machine spec: connect (one transport per host), probe the remote Python
(:mod:`.probe`) while the workers' sessions start, at most ``max_parallel``
session starts at a time per host. A worker's ``WorkerConfig`` is appended to
``launched`` once its shell reported its pid and the probe passed. Errors are
gathered; the first is raised (with the others as notes) after every host is
done, so the workers that did start are connected and then removed by the core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from concurrent.futures import Future, InvalidStateError
from threading import Condition
from typing import Any

from clustercore.plugin import (
    LaunchCancelled,
    WorkerConfig,
    launch_cancelled,
    on_launch_cancelled,
    report_launched,
    worker_command,
    worker_environment,
    worker_secret,
    worker_timeout,
)

from .connection import HostConnection
from .deadline import Deadline
from .errors import SSHLaunchError
from .hostconfig import HostSettings, resolve_host
from .manager import SSHManager
from .probe import ProbeResult, probe, probe_argv
from .remote_command import check_env, shell_command
from .session import WorkerSession
from .spec import MachineSpec

log = logging.getLogger(__name__)


class _Plan:
    """What to run on one machine spec; built (and checked) before any connection."""

    def __init__(self, manager: SSHManager, spec: MachineSpec, params: dict[str, Any]) -> None:
        self.spec = spec
        self.settings: HostSettings = resolve_host(spec.user, spec.host, spec.port, manager.flags)
        self.exename = str(params.get("exename") or sys.executable)
        self.exeflags = tuple(str(f) for f in params.get("exeflags") or ())
        env = worker_environment(params)
        check_env(env)
        given = params.get("dir")
        dir, soft = (str(given), False) if given else (os.getcwd(), True)
        bind_to = spec.bind_to
        if bind_to is None and manager.tunnel and params.get("topology") == "master_worker":
            bind_to = "127.0.0.1"  # nobody but the driver, through the tunnel, dials it
        elif bind_to is None:
            bind_to = "ssh"  # the address the driver reached the host on, not every interface
        argv = worker_command({**params, "exename": self.exename}, bind_to=bind_to, lifeline=True)
        run: dict[str, Any] = {"env": env, "dir": dir, "dir_if_exists": soft, "shell": manager.shell}
        self.worker_line = shell_command(argv, report_pid=True, **run)
        self.probe_line = shell_command(probe_argv(self.exename, self.exeflags), **run)


def launch_workers(manager: SSHManager, params: dict[str, Any], launched: list[WorkerConfig], ntfy: Condition) -> None:
    """Start every machine's workers; raise the first error once all hosts are done."""
    deadline = Deadline(worker_timeout())
    plans = [_Plan(manager, spec, params) for spec in manager.specs]
    cookie = worker_secret()  # the cookie, and TLS credentials if the cluster uses TLS
    errors: list[BaseException] = []
    connections: dict[tuple[Any, ...], HostConnection] = {}  # this launch's own: a cancel closes them
    hosts = [_HostLaunch(manager, plan, params, cookie, deadline, launched, ntfy, connections) for plan in plans]
    cancelled = launch_cancelled(ntfy)

    def abort_all() -> None:
        for host in hosts:
            host.abort()

    on_launch_cancelled(ntfy, abort_all)
    threads = [
        threading.Thread(
            target=_guarded, args=(errors, host.run), name=f"clustercore-ssh-{host.plan.spec.host}", daemon=True
        )
        for host in hosts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if cancelled.is_set():
        raise LaunchCancelled("the SSH launch was cancelled")
    if errors:
        first = errors[0]
        for extra in errors[1:]:
            first.add_note(f"also: {extra}")
        raise first


def _guarded(errors: list[BaseException], f: Any, *args: Any) -> None:
    try:
        f(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by launch_workers
        errors.append(exc)


class _HostLaunch:
    """The workers of one machine spec: connect, probe, start ``count`` sessions, report each."""

    def __init__(
        self,
        manager: SSHManager,
        plan: _Plan,
        params: dict[str, Any],
        cookie: str,
        deadline: Deadline,
        launched: list[WorkerConfig],
        ntfy: Condition,
        connections: dict[tuple[Any, ...], HostConnection],
    ) -> None:
        self.manager, self.plan, self.params, self.cookie = manager, plan, params, cookie
        self.deadline, self.launched, self.ntfy = deadline, launched, ntfy
        self.slots = manager.start_slots(plan.settings)
        self.probed: Future[ProbeResult] = Future()
        self.connections = connections
        self.conn: HostConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def abort(self) -> None:
        """The launch was cancelled: close this host's connection (it is this launch's alone,
        so every session on it is one of ours), wherever its threads wait."""
        with self._lock:
            self._aborted = True
            conn = self.conn
        if conn is not None:
            conn.abort()
        if not self.probed.done():
            try:
                self.probed.set_exception(SSHLaunchError(self.plan.settings.label, "session", "cancelled"))
            except InvalidStateError:
                pass  # it was answered meanwhile

    def run(self) -> None:
        with self._lock:
            conn = self.conn = self.manager.connection(self.plan.settings, self.connections)
            aborted = self._aborted
        if aborted:
            conn.abort()
        try:
            conn.connect(self.deadline)
            if self.plan.spec.count == "auto":
                self._probe()
                count = self.probed.result().cpus
            else:
                count = self.plan.spec.count
                threading.Thread(target=self._probe, name="clustercore-ssh-probe", daemon=True).start()
            errors: list[BaseException] = []
            starters = [
                threading.Thread(target=_guarded, args=(errors, self._start_one), daemon=True) for _ in range(count)
            ]
            for thread in starters:
                thread.start()
            for thread in starters:
                thread.join()
            self.probed.result()  # its failure explains the others best
            if errors:
                first = errors[0]
                if len(errors) > 1:
                    first.add_note(f"{len(errors) - 1} more worker(s) on {conn.label} failed as well")
                raise first
        finally:
            conn.release()

    def _probe(self) -> None:
        assert self.conn is not None
        try:
            result = probe(self.conn, self.plan.probe_line, self.plan.exename, self.deadline)
        except BaseException as exc:  # noqa: BLE001 - read through the future
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                self.probed.set_exception(exc)
            return
        with contextlib.suppress(InvalidStateError):
            self.probed.set_result(result)

    def _start_one(self) -> None:
        conn, plan = self.conn, self.plan
        assert conn is not None
        if not self.slots.acquire(timeout=self.deadline.left()):
            raise SSHLaunchError(conn.label, "session", f"no session slot within {self.deadline.seconds:g} s")
        own = Deadline(worker_timeout())  # the worker's own join timer starts about now too
        try:
            session = WorkerSession.start(conn, plan.worker_line, self.cookie, own)
        finally:
            self.slots.release()
        session.deadline = own
        try:
            self.probed.result(timeout=self.deadline.left())
        except BaseException:
            session.stop(grace=0)
            raise
        config = WorkerConfig(
            io=session.stdout,
            host=plan.spec.destination,
            count=plan.spec.count,
            exename=plan.exename,
            exeflags=plan.exeflags,
            userdata=session,
            tunnel=self.manager.tunnel,
            bind_addr=plan.spec.bind_to,
            sshflags=self.manager.flags.words,
            max_parallel=self.manager.max_parallel,
            process=session,
            ospid=session.ospid,
            enable_threaded_blas=bool(self.params.get("enable_threaded_blas")),
        )
        log.debug("started worker pid %d on %s", session.ospid, conn.label)
        report_launched(self.launched, self.ntfy, config)  # once cancelled: the core ends it and this raises
