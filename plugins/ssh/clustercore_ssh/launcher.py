"""``launch`` for :class:`SSHManager`: every host at once, every worker of a host on its own channel.

Per machine spec: connect (one transport per host), probe the remote Python
(:mod:`.probe`) while the workers' sessions start, at most ``max_parallel``
session starts at a time per host. A worker's ``WorkerConfig`` is handed to
the core once its shell reported its pid and the probe passed, and those
before it in the machine list were (:class:`_InOrder`): pids follow the list. Errors are
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
    order = _InOrder(len(plans), launched, ntfy)
    hosts = [
        _HostLaunch(manager, plan, params, cookie, deadline, order.reporter(i), connections)
        for i, plan in enumerate(plans)
    ]
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
    for config in order.never_handed_over():  # behind a machine that never settled: cancelled
        config.process.kill()
    if cancelled.is_set():
        raise LaunchCancelled("the SSH launch was cancelled")
    if errors:
        first = errors[0]
        for extra in errors[1:]:
            first.add_note(f"also: {extra}")
        raise first


class _InOrder:
    """Hands started workers to the core in launch order, machine by machine, then worker by
    worker, whichever starts first: so ``pids[0]`` is the first machine's first worker, as in
    the machine list. A worker waits only for those before it; a failed one is skipped (the
    launch fails anyway, and the core removes the others)."""

    def __init__(self, machines: int, launched: list[WorkerConfig], ntfy: Condition) -> None:
        self.launched, self.ntfy = launched, ntfy
        self.counts: list[int | None] = [None] * machines  # workers per machine, once known
        self.slots: list[dict[int, WorkerConfig | None]] = [{} for _ in range(machines)]
        self.machine = self.index = 0  # the next one to hand over
        self.lock = threading.Lock()  # held while handing over: report_launched calls stay in order

    def reporter(self, machine: int) -> _Reporter:
        return _Reporter(self, machine)

    def settle(self, machine: int, index: int | None, config: WorkerConfig | None, count: int | None = None) -> None:
        """Worker ``index`` of ``machine`` started (``config``) or failed (``None``); or, with
        ``index=None``, ``machine`` will have ``count`` workers. Hands over whatever is next."""
        with self.lock:
            if index is None:
                self.counts[machine] = count
            else:
                self.slots[machine][index] = config
            cancelled: LaunchCancelled | None = None
            for ready in self._next():
                try:
                    report_launched(self.launched, self.ntfy, ready)
                except LaunchCancelled as exc:  # the core ended it; the rest are ended the same way
                    cancelled = exc
            if cancelled is not None:
                raise cancelled

    def never_handed_over(self) -> list[WorkerConfig]:
        with self.lock:
            left = [config for slots in self.slots for config in slots.values() if config is not None]
            for slots in self.slots:
                slots.clear()
            return left

    def _next(self) -> list[WorkerConfig]:
        ready = []
        while self.machine < len(self.counts):
            count, slots = self.counts[self.machine], self.slots[self.machine]
            if count is not None and self.index >= count:
                self.machine, self.index = self.machine + 1, 0
                continue
            if self.index not in slots:
                break
            config = slots.pop(self.index)
            self.index += 1
            if config is not None:
                ready.append(config)
        return ready


class _Reporter:
    """One machine's side of :class:`_InOrder`."""

    def __init__(self, order: _InOrder, machine: int) -> None:
        self.order, self.machine = order, machine

    def count(self, count: int) -> None:
        self.order.settle(self.machine, None, None, count)

    def started(self, index: int, config: WorkerConfig | None) -> None:
        self.order.settle(self.machine, index, config)


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
        reporter: _Reporter,
        connections: dict[tuple[Any, ...], HostConnection],
    ) -> None:
        self.manager, self.plan, self.params, self.cookie = manager, plan, params, cookie
        self.deadline, self.reporter = deadline, reporter
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
        count = 0  # workers started on this machine, each settled in order by its starter
        try:
            conn.connect(self.deadline)
            if self.plan.spec.count == "auto":
                self._probe()
                wanted = self.probed.result().cpus
            else:
                wanted = self.plan.spec.count
                threading.Thread(target=self._probe, name="clustercore-ssh-probe", daemon=True).start()
            errors: list[BaseException] = []
            starters = [
                threading.Thread(target=_guarded, args=(errors, self._start_one, i), daemon=True) for i in range(wanted)
            ]
            for thread in starters:
                thread.start()
                count += 1
            for thread in starters:
                thread.join()
            self.probed.result()  # its failure explains the others best
            if errors:
                first = errors[0]
                if len(errors) > 1:
                    first.add_note(f"{len(errors) - 1} more worker(s) on {conn.label} failed as well")
                raise first
        finally:
            self.reporter.count(count)
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

    def _start_one(self, index: int) -> None:
        """Start worker ``index`` of this machine and hand it over in its turn."""
        config = None
        try:
            config = self._start(index)
        finally:
            self.reporter.started(index, config)  # None: it failed, the next ones go on

    def _start(self, index: int) -> WorkerConfig:
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
        log.debug("started worker %d, pid %d, on %s", index, session.ospid, conn.label)
        return config  # handed over in launch order; once cancelled, the core ends it
