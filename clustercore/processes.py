"""Adding and removing workers (Julia's ``addprocs``/``create_worker``/``rmprocs``).

Only pid 1 adds or removes workers. ``addprocs`` runs the manager's
``launch`` on a thread and, as ``WorkerConfig`` objects appear in
``launched``, creates each worker: assign the next pid, ``connect``,
authenticate, send ``JoinPGRP``, wait for ``JoinComplete``. Then the older
workers learn about the new ones (one broadcast, replies gathered as they
arrive) and, for ``lazy=False``, every pair is connected.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import attach
from .engine import cluster, hooks
from .engine.cluster import PGRP, Worker, WorkerState, worker_timeout
from .engine.launches import LaunchNotify
from .engine.launching import WorkerConfig, drain_worker_output, forward_worker_output
from .engine.managers import ClusterManager
from .engine.membership import connect_to_lower, learn_peers
from .engine.messages import JoinComplete, JoinPGRP, MsgType, PeerInfo, PeerTable
from .engine.peers import attach_connection, deregister_worker, kill_quietly, send_msg
from .engine.requests import broadcast_call, call_fetch_async, remote_exit
from .errors import LaunchCancelled
from .links import establish
from .links.connection import Connection
from .sigint import WaitableThread, call_holding_sigint
from .wire import serialize
from .wire.transport import make_transport, socket_of

log = logging.getLogger(__name__)

GENERIC_PARAMS: dict[str, Any] = {
    "dir": None,
    "exename": None,
    "exeflags": (),
    "env": None,
    "topology": "all_to_all",
    "lazy": True,
    "enable_threaded_blas": False,
    "tls": None,
}
_addprocs_lock = threading.Lock()


def _require_driver(what: str) -> None:
    if PGRP.myid != 1:
        raise RuntimeError(f"only pid 1 can {what}; this is pid {PGRP.myid}")


def addprocs(what: Any = None, /, **kwargs: Any) -> list[int]:
    """Add workers; returns their pids, ascending.

    ``addprocs(n)`` / ``addprocs()`` start local workers, ``addprocs([machines])``
    SSH workers, ``addprocs(manager)`` any manager, ``addprocs("name")`` the
    manager registered under that entry-point name.
    """
    _require_driver("add workers")
    manager, params = _resolve_manager(what, kwargs)
    launch: _Launch | None = None
    try:
        with _addprocs_lock:
            launch = _prepare_launch(manager, params)
            try:
                pids = launch.commit()
            except BaseException as exc:  # rolled back under the lock: the next launch finds the cluster as it was
                call_holding_sigint(launch.roll_back, exc)  # a second Ctrl-C waits until this is done
                raise
        return pids  # nothing checks for signals between the lock's release and here
    except BaseException as exc:
        if launch is not None:  # a Ctrl-C as the lock was released: the caller never got the pids
            call_holding_sigint(launch.roll_back, exc)  # (once: a rolled-back launch ignores this)
        raise


def _resolve_manager(what: Any, kwargs: dict[str, Any]) -> tuple[ClusterManager, dict[str, Any]]:
    if isinstance(what, ClusterManager):
        hooks.PLUGINS.serving(what)  # load the plugins it may need here, not on a join thread
        return what, _check_params(kwargs, extra_ok=True)
    if what is None:
        return _manager_by_name("local", {"np": os.cpu_count() or 1, **kwargs})
    if isinstance(what, bool):
        raise TypeError("addprocs takes a worker count, a list of machines, a manager or a manager name")
    if isinstance(what, int):
        if what < 1:
            raise ValueError(f"addprocs needs a positive number of workers, not {what}")
        return _manager_by_name("local", {"np": what, **kwargs})
    if isinstance(what, str):
        return _manager_by_name(what, kwargs)
    if isinstance(what, (list, tuple)):
        return _manager_by_name("ssh", {"machines": list(what), **kwargs})
    raise TypeError(
        f"addprocs takes a worker count, a list of machines, a ClusterManager or a manager name, "
        f"not {type(what).__name__}"
    )


def _manager_by_name(name: str, kwargs: dict[str, Any]) -> tuple[ClusterManager, dict[str, Any]]:
    cls = hooks.manager_class(name)
    if cls is None:
        known = ", ".join(sorted(hooks.manager_types())) or "none"
        broken = [info.error for info in hooks.installed_plugins() if info.name == name and info.error]
        if broken:
            hint = f"; its plugin failed to load: {broken[0]}"
        else:
            hint = f"; install clustercore-{name}" if name in ("local", "ssh", "slurm", "k8s") else ""
        raise ValueError(f"no cluster manager named {name!r} (installed: {known}){hint}")
    own: set[str] = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    mine = {k: v for k, v in kwargs.items() if k in own and k not in GENERIC_PARAMS}
    rest = {k: v for k, v in kwargs.items() if k not in mine}
    for key in set(own) & set(GENERIC_PARAMS) & set(kwargs):
        mine[key] = kwargs[key]  # a manager may also want a generic parameter itself
    params = _check_params(rest, extra_ok=False, who=f"addprocs({name!r})")
    return cls(**mine), params


def _check_params(kwargs: dict[str, Any], extra_ok: bool, who: str = "addprocs") -> dict[str, Any]:
    unknown = set(kwargs) - set(GENERIC_PARAMS)
    if unknown and not extra_ok:
        raise TypeError(f"{who} got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    params = {**GENERIC_PARAMS, **kwargs}
    if params["topology"] not in cluster.TOPOLOGIES:
        raise ValueError(f"topology must be one of {', '.join(cluster.TOPOLOGIES)}, not {params['topology']!r}")
    if not isinstance(params["lazy"], bool):
        raise TypeError("lazy must be True or False")
    if isinstance(params["exeflags"], str):
        params["exeflags"] = tuple(params["exeflags"].split())
    if params["env"] is not None and not isinstance(params["env"], dict):
        raise TypeError("env must be a dict of environment variables")
    if params["dir"] is not None and not isinstance(params["dir"], (str, os.PathLike)):
        raise TypeError("dir must be a path")
    return params


def _check_joins_cluster(params: dict[str, Any]) -> None:
    """New workers must share the running ones' topology and laziness (Julia's ``addprocs_locked``)."""
    if not PGRP.workers:
        return
    if params["topology"] != PGRP.topology:
        raise ValueError(f"the cluster's topology is {PGRP.topology!r}; cannot add {params['topology']!r} workers")
    lazy = params["lazy"] if params["topology"] == "all_to_all" else False
    if lazy != PGRP.lazy:
        raise ValueError(f"the running workers were added with lazy={PGRP.lazy}; cannot add workers with lazy={lazy}")


_exit_hook_registered = False


def _prepare_launch(manager: ClusterManager, params: dict[str, Any]) -> _Launch:
    global _exit_hook_registered
    attach.attach_by_default()  # `clustercore top` can look at a driver with workers (docs/observability.md)
    if not _exit_hook_registered:  # workers go when the driver exits normally
        import atexit

        atexit.register(terminate_all_workers)
        _exit_hook_registered = True
    _check_joins_cluster(params)
    cluster.cluster_cookie()
    cluster.use_tls(params["tls"])
    return _Launch(manager, params)


class _Launch:
    """One ``addprocs`` call, all or nothing (the transaction of ``engine/launches.py``).

    :meth:`run` runs the manager's ``launch`` on a thread of its own and joins each
    worker it reports as it comes. If anything goes wrong, or the caller is
    interrupted at any moment, :meth:`roll_back` cancels the launch and ends every
    worker it started (joined or not), so the cluster is as it was.
    """

    def __init__(self, manager: ClusterManager, params: dict[str, Any]) -> None:
        self.manager, self.params = manager, params
        self.launched: list[WorkerConfig] = []
        self.ntfy = LaunchNotify()
        self.error: BaseException | None = None
        self.done = False
        self.thread: WaitableThread | None = None
        self.taken = 0  # configs of ``launched`` handed to ``joining`` (or ended)
        self.joining = _Joining(manager, params, self.ntfy.started)
        self.saved = (PGRP.topology, PGRP.lazy)
        self.rolled_back = False

    def _run_launch(self) -> None:
        try:
            self.manager.launch(self.params, self.launched, self.ntfy)
        except LaunchCancelled:
            pass  # addprocs gave up already: its own reason is what the caller sees
        except BaseException as exc:  # noqa: BLE001 - raised by addprocs
            self.error = exc
        finally:
            with self.ntfy:
                self.done = True
                self.ntfy.notify_all()
            if self.ntfy.cancelled.is_set():
                self._end_untaken()  # a manager that appended without report_launched

    def commit(self) -> list[int]:
        """Launch and join every worker, introduce them to the others; their pids, ascending.
        Whatever this raises, :meth:`roll_back` undoes."""
        new = self.run()
        _introduce(new, self.params)
        pids = sorted(w.id for w in new)
        cluster.announce_joined(pids)
        return pids

    def run(self) -> list[Worker]:
        params = self.params
        PGRP.topology, PGRP.lazy = params["topology"], params["lazy"] if params["topology"] == "all_to_all" else False
        self.thread = WaitableThread(self._run_launch, name="clustercore-launch")
        call_holding_sigint(self.thread.start)  # once called, started for sure (roll_back waits for it)
        while True:
            with self.ntfy:
                while self.taken == len(self.launched) and not self.done:
                    self.ntfy.wait()
                finished = self.done and self.taken == len(self.launched)
            while True:  # each config is taken and handed over with Ctrl-C held: none is lost between
                self.joining.wait_for_room()  # (a Ctrl-C may come while waiting)
                if not call_holding_sigint(self._take_one):
                    break
            if finished:
                break
        new, errors = self.joining.wait()
        if self.error is not None:
            errors.insert(0, self.error)
        if errors:
            first = errors[0]
            for extra in errors[1:]:
                first.add_note(f"also: {extra}")
            raise first
        return new

    def _take_one(self) -> bool:
        with self.ntfy:
            if self.taken == len(self.launched):
                return False
            config = self.launched[self.taken]
            self.taken += 1
        self.joining.start(config)
        return True

    def _end_untaken(self) -> None:
        with self.ntfy:
            left, self.taken = self.launched[self.taken :], len(self.launched)
        for config in left:
            self.joining.end_unjoined(PGRP.next_pid(), config)

    def roll_back(self, exc: BaseException) -> None:
        """Cancel the launch and end everything it started, waiting at most ``worker_timeout()``
        (30 s at least): what is still ending then ends in the background, and a note on
        ``exc`` says so. Once: later calls do nothing."""
        if self.rolled_back:
            return
        self.rolled_back = True
        deadline = time.monotonic() + max(worker_timeout(), ROLLBACK_MIN_SECONDS)
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        self.ntfy.cancel(reason, lambda config: self.joining.end_unjoined(PGRP.next_pid(), config))
        joined = self.joining.cancel()
        removal = rmprocs([w.id for w in joined], waitfor=0) if joined else None
        left: list[str] = []
        if self.thread is not None:
            if not self.thread.wait(max(0.0, deadline - time.monotonic())):
                left.append(f"{type(self.manager).__name__}'s launch is still running")
        self._end_untaken()
        if not self.joining.wait_all(max(0.0, deadline - time.monotonic())):
            left.append("some workers are still being ended")
        if removal is not None:
            try:
                removal.wait(max(0.0, deadline - time.monotonic()))
            except TimeoutError as why:
                left.append(str(why))
        with PGRP.lock:
            if not any(w.state is not WorkerState.TERMINATED for w in PGRP.workers.values()):
                PGRP.topology, PGRP.lazy = self.saved
        if left:
            log.warning("addprocs was rolled back, but not all of it in time: %s", "; ".join(left))
            exc.add_note("addprocs was rolled back, but not all of it in time: " + "; ".join(left))


ROLLBACK_MIN_SECONDS = 30.0  # at least this long to end what a failed addprocs started


class _Joining:
    """Workers being connected and joined, up to ``_AT_ONCE`` at a time on threads of
    their own (as Julia's ``addprocs`` does with a task per worker): their hand-shakes
    overlap. A joining thread takes the next worker waiting when it is done with one,
    so a thousand workers do not start a thousand threads. Once cancelled, a worker that
    still joins is removed again, and those in flight are ended so that their joins fail
    at once."""

    _AT_ONCE = 64  # joins in flight at most

    def __init__(self, manager: ClusterManager, params: dict[str, Any], launch_started: float) -> None:
        self.manager = manager
        self.params = params
        self.launch_started = launch_started  # time.monotonic(): each worker's launch time runs from here
        self.peers = _batch_peers(params["topology"])
        self.joined: list[Worker] = []
        self.errors: list[BaseException] = []
        self.cancelled = False
        self._threads: list[WaitableThread] = []
        self._in_flight: dict[int, WorkerConfig] = {}  # started or waiting for a joining thread
        self._waiting: collections.deque[tuple[WorkerConfig, int]] = collections.deque()
        self._joiners = 0  # joining threads that have not finished
        self._no_more = False  # every launched worker has been handed over (wait())
        self._ended: set[int] = set()  # id() of the configs ended here
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified as joins end, and on cancel

    def wait_for_room(self) -> None:
        with self._room:
            self._room.wait_for(lambda: len(self._in_flight) < self._AT_ONCE or self.cancelled)

    def start(self, config: WorkerConfig) -> None:
        pid = PGRP.next_pid()  # in launch order, whatever order the joins finish in
        with self._room:
            self._room.wait_for(lambda: len(self._in_flight) < self._AT_ONCE or self.cancelled)
            late = self.cancelled
            if not late:
                self._in_flight[pid] = config
            self._waiting.append((config, pid))
            more = self._joiners < len(self._in_flight)  # else a joining thread takes it when free
            self._joiners += more
            self._room.notify_all()
        if late:
            self.end_unjoined(pid, config)
            return
        if more:
            thread = WaitableThread(self._join_waiting, name="clustercore-join")
            self._threads.append(thread)
            thread.start()

    def _join_waiting(self) -> None:
        """Join the workers waiting, one after another, until the launch has handed over
        its last (or is cancelled: cancel() ends those still waiting)."""
        while True:
            with self._room:
                while not (self._waiting or self._no_more or self.cancelled):
                    self._room.wait()
                if self.cancelled or not self._waiting:
                    self._joiners -= 1
                    return
                config, pid = self._waiting.popleft()
            self._join(config, pid)

    def _join(self, config: WorkerConfig, pid: int) -> None:
        try:
            w = create_worker(self.manager, config, self.params, pid, peers=self.peers, end=self.end_unjoined)
            w.launched, w.joined = self.launch_started, time.monotonic()  # its launch to its join (metrics)
            with self._lock:
                late = self.cancelled
                if not late:
                    self.joined.append(w)
            if late:  # addprocs gave up while this one joined: it goes again
                rmprocs([w.id], waitfor=max(worker_timeout(), ROLLBACK_MIN_SECONDS))
        except BaseException as exc:  # noqa: BLE001 - keep going, report all at the end
            with self._lock:
                self.errors.append(exc)
        finally:
            with self._room:
                self._in_flight.pop(pid, None)
                self._room.notify_all()

    def end_unjoined(self, pid: int, config: WorkerConfig) -> None:
        """End a launched worker that has not joined (once, whoever asks first)."""
        with self._lock:
            if id(config) in self._ended:
                return
            self._ended.add(id(config))
        _kill_unjoined(self.manager, pid, config)

    def cancel(self) -> list[Worker]:
        """No more joins: end those in flight (their joins then fail); returns the joined."""
        with self._room:
            self.cancelled = True
            self._room.notify_all()
            joined, in_flight = list(self.joined), list(self._in_flight.items())
        for pid, config in in_flight:
            ender = WaitableThread(self.end_unjoined, pid, config, name=f"clustercore-end-{pid}")
            ender.start()
            self._threads.append(ender)
        return joined

    def wait(self) -> tuple[list[Worker], list[BaseException]]:
        """Once every launched worker is handed over: wait for their joins to end."""
        with self._room:
            self._no_more = True  # idle joining threads return
            self._room.notify_all()
        for thread in self._threads:
            thread.wait()
        return self.joined, self.errors

    def wait_all(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(thread.wait(max(0.0, deadline - time.monotonic())) for thread in list(self._threads))


def create_worker(
    manager: ClusterManager,
    config: WorkerConfig,
    params: dict[str, Any],
    pid: int | None = None,
    *,
    peers: PeerTable | None = None,
    end: Callable[[int, WorkerConfig], None] | None = None,
) -> Worker:
    """Connect to one launched worker and make it join (Julia's ``create_worker``);
    ``peers``, if given, are the workers it is told of (else those it may reach now).
    A worker that fails to join is ended (by ``end``, default: through its manager)
    before the error is raised."""
    if pid is None:
        pid = PGRP.next_pid()
    if end is None:
        end = functools.partial(_kill_unjoined, manager)
    timeout = worker_timeout()
    try:
        instream, outstream = manager.connect(pid, config)
    except BaseException:
        end(pid, config)
        raise
    if config.io is not None:
        forward_worker_output(pid, config.io)
    transport = make_transport(instream, outstream)
    try:
        transport = establish.dial(transport, cluster.cluster_cookie(), PGRP.tls, me=1, deadline=timeout)
        conn = Connection(transport, pid)
        told, connect_now = _peers_for(config) if peers is None else (peers, [])
        join = JoinPGRP(
            self_pid=pid,
            peers=told,
            connect_now=connect_now,
            topology=PGRP.topology,
            lazy=PGRP.lazy,
            enable_threaded_blas=bool(params.get("enable_threaded_blas")),
            driver_hostname=PGRP.hostname,
        )
        payload, buffers = serialize.dumps(join)
        conn.send_frame(MsgType.JOIN_PGRP, payload, buffers)
        transport.set_timeout(timeout)
        frame = conn.read_frame()
        transport.set_timeout(None)
        if frame is None or frame.msg_type != MsgType.JOIN_COMPLETE:
            raise ConnectionError(f"worker {pid} closed the connection while joining")
        done: JoinComplete = serialize.loads(frame.payload, frame.buffers)
        if isinstance(done, BaseException):
            raise done
    except BaseException:
        transport.close()
        end(pid, config)
        raise
    w = Worker(pid, config.connect_at, done.hostname, config, manager)
    w.ospid, w.cpu_threads, w.local_address = done.ospid, done.cpu_threads, done.local_address
    config.ospid = config.ospid or done.ospid
    with PGRP.lock:
        PGRP.workers[pid] = w
    try:
        attach_connection(w, conn)
        manager.manage(pid, config, "register")
    except BaseException as exc:  # registered but not served: forget it here, nobody else would
        deregister_worker(pid, f"its join failed: {exc!r}")
        end(pid, config)
        raise
    return w


def _kill_unjoined(manager: ClusterManager, pid: int, config: WorkerConfig) -> None:
    """A launched process that never joined: end it through the handle in ``config.process``
    if there is one, else through its manager; returns once that is done."""
    process = config.process
    if process is not None and hasattr(process, "kill"):
        try:
            process.kill()
        except Exception:
            log.debug("ending unjoined worker %d failed", pid, exc_info=True)
        return
    kill_quietly(manager, pid, config)


def _batch_peers(topology: str) -> PeerTable | None:
    """all_to_all: what every worker of a batch is told as it joins, pickled once: the
    workers there before the batch. It learns its batch mates with everyone else in
    :func:`_introduce` (telling each the ones that joined before it would be n²/2 records)."""
    if topology != "all_to_all":  # the launch's: the cluster's is set once the launch runs
        return None  # custom: each its own; master_worker: none
    with PGRP.lock:
        there = [w for w in PGRP.workers.values() if w.state is not WorkerState.TERMINATED]
    return PeerTable.of(_peer_info(w) for w in there)


def _peers_for(config: WorkerConfig) -> tuple[list[PeerInfo], list[int]]:
    """The workers a joining worker is told of, and those it must connect to at once (a
    custom topology's links to workers already there): one look at the cluster for both,
    so a worker that joins meanwhile is in neither or in both."""
    if PGRP.topology == "master_worker":
        return [], []
    with PGRP.lock:
        others = [w for w in PGRP.workers.values() if w.state is not WorkerState.TERMINATED]
    if PGRP.topology != "custom":
        return [_peer_info(w) for w in others], []
    linked = [w for w in others if _custom_linked(config, w)]
    wanted = config.connect_idents or []
    return [_peer_info(w) for w in linked], [w.id for w in linked if w.config and w.config.ident in wanted]


def _custom_linked(config: WorkerConfig, other: Worker) -> bool:
    theirs = other.config
    mine_wants = config.connect_idents or []
    they_want = (theirs.connect_idents or []) if theirs else []
    return (theirs is not None and theirs.ident in mine_wants) or (config.ident in they_want)


def _introduce(new: list[Worker], params: dict[str, Any]) -> None:
    """Tell older workers about the new ones; with ``lazy=False`` connect every pair.
    A new worker that is gone already is left out: workers that joined after it left
    were not told it left, and would know it for good."""
    with PGRP.lock:
        new = [w for w in new if w.state is not WorkerState.TERMINATED]
    if not new or PGRP.topology == "master_worker":
        return
    everyone = [p for p in cluster.procs() if p != 1]
    if PGRP.topology == "custom":  # each worker learns only the new workers it is linked with
        with PGRP.lock:
            records = {p: PGRP.workers[p] for p in everyone if p in PGRP.workers}
        waiters = []
        for pid, w in records.items():
            linked = [_peer_info(x) for x in new if x.id != pid and x.config and _custom_linked(x.config, w)]
            if linked:
                waiters.append(call_fetch_async(pid, learn_peers, (linked,), {}))
        for waiter in waiters:
            waiter.result()
        return
    news = PeerTable.of(_peer_info(w) for w in new)  # each ignores itself and whom it knows
    broadcast_call(learn_peers, everyone, news)
    if not PGRP.lazy:
        broadcast_call(connect_to_lower, everyone)


def _peer_info(w: Worker) -> PeerInfo:
    return PeerInfo(w.id, w.connect_at, w.hostname, w.local_address)


# --- what the driver asks workers to do ----------------------------------------------


# --- removing workers --------------------------------------------------------------


class RemovalHandle:
    """Returned by ``rmprocs(..., waitfor=0)``: ``wait()`` until the workers are gone."""

    def __init__(self, removing: list[Worker], killers: list[WaitableThread]) -> None:
        self.pids = [w.id for w in removing]
        self._removing = removing
        self._killers = killers

    def done(self) -> bool:
        return all(w.gone.is_set() for w in self._removing)

    def wait(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for w in self._removing:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not w.gone.wait(left):
                pending = [x.id for x in self._removing if not x.gone.is_set()]
                raise TimeoutError(f"workers {pending} were not removed within {timeout:g} s")
        for killer in self._killers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            killer.wait(left)


def _flatten_pids(pids: tuple[Any, ...]) -> list[int]:
    flat: list[int] = []
    for p in pids:
        if isinstance(p, (list, tuple, set, frozenset)):
            flat.extend(p)
        else:
            flat.append(p)
    return [cluster.check_pid(p) for p in flat]


def rmprocs(*pids: Any, waitfor: float | None = None) -> RemovalHandle:
    """Remove workers: ask each to exit, then end it through its manager.

    ``waitfor=None`` waits until all are gone; a number raises ``TimeoutError``
    if they are not gone in time; ``0`` returns at once (``.wait()`` later).
    """
    _require_driver("remove workers")
    removing: list[Worker] = []
    for pid in _flatten_pids(pids):
        if pid == 1:
            log.warning("rmprocs: pid 1 cannot be removed")
            continue
        with PGRP.lock:
            w = PGRP.workers.get(pid)
        if w is None:
            if pid in PGRP.exited:
                continue
            raise ValueError(f"rmprocs: no worker with pid {pid}; the workers are {cluster.workers()}")
        if w.state is not WorkerState.TERMINATED:
            w.state = WorkerState.TERMINATING
        removing.append(w)
    killers = []
    for w in removing:
        thread = WaitableThread(_kill_worker, w, name=f"clustercore-kill-{w.id}")
        thread.start()
        killers.append(thread)
    handle = RemovalHandle(removing, killers)
    if waitfor != 0:
        handle.wait(waitfor)
    return handle


def _kill_worker(w: Worker) -> None:
    manager, config = w.manager, w.config
    try:
        if manager is not None and config is not None:
            manager.kill(w.id, config)
        else:
            remote_exit(w.id)
    except Exception:
        log.exception("kill failed for worker %d", w.id)
    finally:
        if not w.gone.wait(worker_timeout()):
            deregister_worker(w.id, "removed (its connection never closed)")
        if manager is not None and config is not None:
            try:
                manager.manage(w.id, config, "finalize")
            except Exception:
                log.exception("manage(finalize) failed for worker %d", w.id)


def interrupt(*pids: Any) -> None:
    """Raise ``KeyboardInterrupt`` in the calls running on these workers (all by default)."""
    _require_driver("interrupt workers")
    targets = _flatten_pids(pids) or [p for p in cluster.workers() if p != 1]
    for pid in targets:
        w = cluster.worker_from_id(pid)
        send_msg(pid, MsgType.INTERRUPT, None)
        if w.manager is not None and w.config is not None:
            w.manager.manage(pid, w.config, "interrupt")


def worker_id_from_socket(s: Any) -> int:
    """The pid at the other end of a connection's socket; -1 if it is not one of ours."""
    with PGRP.lock:
        links = [w.conn for w in PGRP.workers.values() if w.conn is not None]
    for conn in links:
        transport = conn.transport
        if socket_of(transport) is s or getattr(transport, "instream", None) is s:
            return conn.peer
    return -1


def terminate_all_workers() -> None:
    """At driver exit: remove every worker, briefly, and print what they printed last."""
    if PGRP.myid != 1:
        return
    if PGRP.workers:
        try:
            rmprocs(list(PGRP.workers), waitfor=5.0)
        except Exception:
            log.debug("terminating workers at exit failed", exc_info=True)
    drain_worker_output(OUTPUT_DRAIN_SECONDS)  # what they printed last is printed, not lost with this process


OUTPUT_DRAIN_SECONDS = 2.0  # at exit, how long the workers' last output may take to come and be printed
