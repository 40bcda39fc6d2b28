"""Process-group state: who is in the cluster and how to reach them.

One owner for mutable cluster state: the :data:`PGRP` object (Julia's
``PGRP``). Pid 1 is the driver; workers are 2, 3, ... and pids are never
reused. Each process knows the workers it may talk to (``Worker`` records);
a record gets its connection when pid 1 creates the worker or, between
workers, lazily on first use.
"""

from __future__ import annotations

import itertools
import os
import pickle
import socket
import threading
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..errors import HandshakeError, ProcessExitedException
from ..links.connection import THREAD, Connection, ConnectionClosed
from ..logs import LazyLogger
from ..wire import serialize
from ..wire.framing import NO_REF
from ..wire.handshake import connect_handshake
from ..wire.transport import make_transport
from .callrunner import CallRunner
from .messages import MsgType, PeerInfo

if TYPE_CHECKING:
    from .managers import ClusterManager, WorkerConfig

log = LazyLogger(__name__)
TOPOLOGIES = ("all_to_all", "master_worker", "custom")


class WorkerState(Enum):
    CREATED = "created"
    CONNECTED = "connected"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


class Waiter:
    """A one-shot result slot that one or more threads wait on."""

    __slots__ = ("_callbacks", "_lock", "done", "failed", "pid", "value")

    def __init__(self, pid: int = 0) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.value: Any = None
        self.failed = False
        self.done = False
        self._callbacks: list[Any] | None = None
        self.pid = pid

    def set(self, value: Any, failed: bool = False) -> bool:
        """Store the outcome once; later calls return ``False`` and change nothing."""
        with _waiter_set_lock:
            if self.done:
                return False
            self.value, self.failed, self.done = value, failed, True
            callbacks, self._callbacks = self._callbacks, None
        self._lock.release()
        for callback in callbacks or ():
            callback(self)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        if self.done:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            self._lock.release()
            return True
        return self.done

    def result(self, timeout: float | None = None) -> Any:
        if not self.wait(timeout):
            raise TimeoutError(f"no result within {timeout:g} s")
        if self.failed:
            raise self.value
        return self.value

    def add_done_callback(self, callback: Any) -> None:
        with _waiter_set_lock:
            if not self.done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)


_waiter_set_lock = threading.Lock()


class Worker:
    """What this process knows about another process of the cluster."""

    def __init__(
        self,
        pid: int,
        connect_at: Any = None,
        hostname: str = "",
        config: WorkerConfig | None = None,
        manager: ClusterManager | None = None,
    ) -> None:
        self.id = pid
        self.connect_at = connect_at
        self.hostname = hostname
        self.config = config
        self.manager = manager
        self.conn: Connection | None = None
        self.state = WorkerState.CREATED
        self._gone: threading.Event | None = None  # made when first asked for: most never are
        self.gc_ops: list[tuple[int, int, int, int]] = []
        self.connect_lock = threading.Lock()
        self.ospid = 0
        self.cpu_threads = 0
        self.exit_reason = ""
        self.local_address = ""  # its abstract Unix socket, reachable from its own host only

    @property
    def gone(self) -> threading.Event:
        """Set once this process has forgotten the worker (it exited or was removed)."""
        if self._gone is None:
            with _gone_lock:
                if self._gone is None:
                    self._gone = threading.Event()
        return self._gone

    def __repr__(self) -> str:
        return f"Worker({self.id}, {self.state.value})"


_gone_lock = threading.Lock()


class _SerialContext(threading.local):
    dest = 0


SERIAL_CTX = _SerialContext()


class ProcessGroup:
    """The cluster as this process sees it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.myid = 1
        self.workers: dict[int, Worker] = {}
        self.exited: dict[int, str] = {}
        self.topology = "all_to_all"
        self.lazy = True
        self.allowed_peers: set[int] | None = None  # custom topology: who we may reach
        self.manager: ClusterManager | None = None  # how this process reaches other workers
        self.cookie: str | None = None
        self.hostname = socket.gethostname()
        self.local_address = ""  # this worker's abstract Unix socket, if it listens on one
        self.driver_hostname = self.hostname
        self.runner = CallRunner()
        self.runner.pid = 1
        self._pids = itertools.count(2)
        self._waiter_ids = itertools.count(1)

    def next_pid(self) -> int:
        return next(self._pids)

    def next_waiter_id(self) -> int:
        return next(self._waiter_ids)

    def set_myid(self, pid: int) -> None:
        self.myid = pid
        self.runner.pid = pid


PGRP = ProcessGroup()


def worker_timeout() -> float:
    """``CLUSTERCORE_WORKER_TIMEOUT`` in seconds (default 60), read at each use."""
    raw = os.environ.get("CLUSTERCORE_WORKER_TIMEOUT", "60")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"CLUSTERCORE_WORKER_TIMEOUT must be a number of seconds, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"CLUSTERCORE_WORKER_TIMEOUT must be positive, not {raw!r}")
    return value


def myid() -> int:
    """This process's pid: 1 on the driver."""
    return PGRP.myid


def cluster_cookie(cookie: str | None = None) -> str:
    """The cluster's shared secret; with an argument, set it (before adding workers).

    A cookie must have 128 random bits' worth of length: at least 32 characters
    if all are hexadecimal digits (39 if all are decimal), else at least 22 (a
    64-symbol alphabet, as ``secrets.token_urlsafe(16)`` makes); a shorter one
    raises ``ValueError``. That is a rule on length, not a measure of randomness:
    make cookies with :mod:`secrets`. The default is ``secrets.token_hex(16)``.
    """
    if cookie is not None:
        if not isinstance(cookie, str) or not cookie or any(c.isspace() for c in cookie):
            raise ValueError("a cluster cookie must be a non-empty string without whitespace")
        if all(c in "0123456789" for c in cookie):
            need, made_of = 39, "decimal digits"
        elif all(c in "0123456789abcdefABCDEF" for c in cookie):
            need, made_of = 32, "hexadecimal digits"
        else:
            need, made_of = 22, "characters"
        if len(cookie) < need:
            raise ValueError(
                f"a cluster cookie of {len(cookie)} {made_of} is weaker than 128 random bits: it needs at least "
                f"{need} (32 hexadecimal digits, 39 decimal ones, else 22 characters); "
                "make one with secrets.token_hex(16) or secrets.token_urlsafe(16)"
            )
        PGRP.cookie = cookie
    elif PGRP.cookie is None:
        import secrets

        PGRP.cookie = secrets.token_hex(16)
    return PGRP.cookie


def procs(pid: int | None = None) -> list[int]:
    """All pids, ascending; with ``pid``, those on the same host as ``pid``."""
    with PGRP.lock:
        known = {p: w for p, w in PGRP.workers.items() if w.state is not WorkerState.TERMINATED}
    if pid is None:
        return sorted({PGRP.myid, *known})
    host = _hostname_of(pid)
    mine = [PGRP.myid] if PGRP.hostname == host else []
    return sorted(mine + [p for p, w in known.items() if w.hostname == host])


def _hostname_of(pid: int) -> str:
    if pid == PGRP.myid:
        return PGRP.hostname
    return worker_from_id(pid).hostname


def workers() -> list[int]:
    """Worker pids, ascending; ``[1]`` while there are none (as in Julia)."""
    pids = [p for p in procs() if p != 1]
    return pids or [1]


def nprocs() -> int:
    return len(procs())


def nworkers() -> int:
    n = nprocs()
    return n - 1 if n > 1 else 1


def check_pid(pid: Any) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"a pid is an int, not {type(pid).__name__} ({pid!r})")
    return pid


def worker_from_id(pid: int) -> Worker:
    """The record for ``pid``: ``ValueError`` if unknown, ``ProcessExitedException`` if gone."""
    if type(pid) is int:
        w = PGRP.workers.get(pid)
        if w is not None and w.state is not WorkerState.TERMINATED:
            return w
    check_pid(pid)
    with PGRP.lock:
        w = PGRP.workers.get(pid)
        if w is not None and w.state is not WorkerState.TERMINATED:
            return w
        if pid in PGRP.exited or w is not None:
            raise ProcessExitedException(pid, PGRP.exited.get(pid, ""))
    if PGRP.myid != 1 and PGRP.topology != "all_to_all":
        raise RuntimeError(
            f"worker {PGRP.myid} is not connected to pid {pid}: in the {PGRP.topology!r} topology "
            f"it reaches only {procs()}"
        )
    raise ValueError(f"no process with pid {pid}; the known pids are {procs()}")


# --- sending --------------------------------------------------------------------------


def dumps_for(dest: int, obj: Any, dumps: Any = serialize.dumps) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` for ``dest`` with ``dumps``; remote references sent along are counted for it."""
    previous = SERIAL_CTX.dest
    SERIAL_CTX.dest = dest
    try:
        return dumps(obj)
    finally:
        SERIAL_CTX.dest = previous


def dumps_in_band_for(dest: int, obj: Any) -> bytes:
    """Like :func:`dumps_for`, with every buffer inside the pickle (to be stored whole)."""
    import cloudpickle

    previous = SERIAL_CTX.dest
    SERIAL_CTX.dest = dest
    try:
        return cloudpickle.dumps(obj, protocol=5)
    finally:
        SERIAL_CTX.dest = previous


def send_msg(
    pid: int,
    msg_type: int,
    obj: Any,
    response: tuple[int, int] = NO_REF,
    notify: tuple[int, int] = NO_REF,
    flags: int = 0,
) -> Connection:
    """Send one message to ``pid``, connecting first if needed; returns the link used."""
    conn = connection_to(pid)
    payload, buffers = dumps_for(pid, obj)
    try:
        conn.send_frame(msg_type, payload, buffers, response, notify, flags)
    except ConnectionClosed as exc:
        raise link_lost(conn, str(exc)) from None
    return conn


def send_with_waiter(
    pid: int, msg_type: int, obj: Any, notify_waiter: bool = False, response: tuple[int, int] = NO_REF
) -> Waiter:
    """Send a message whose answer (a RESULT) lands in the returned waiter."""
    conn = connection_to(pid)
    payload, buffers = dumps_for(pid, obj)
    if notify_waiter:
        return send_pickled_with_waiter(conn, msg_type, payload, buffers, PGRP.next_waiter_id(), response)
    return send_pickled_with_waiter(conn, msg_type, payload, buffers, PGRP.next_waiter_id())


def send_pickled_with_waiter(
    conn: Connection,
    msg_type: int,
    payload: bytes,
    buffers: list[Any],
    wid: int,
    response: tuple[int, int] | None = None,
) -> Waiter:
    """Send a pickled message; RESULT ``(myid, wid)`` lands in the returned waiter.

    That reference goes in the frame's response field, or in its notify field
    when ``response`` (a Future the call fills) is given.
    """
    waiter = Waiter(conn.peer)
    ref = (PGRP.myid, wid)
    conn.waiters[wid] = waiter
    try:
        if response is not None:
            conn.send_frame(msg_type, payload, buffers, response=response, notify=ref)
        else:
            conn.send_frame(msg_type, payload, buffers, response=ref)
    except ConnectionClosed as exc:
        conn.waiters.pop(wid, None)
        raise link_lost(conn, str(exc)) from None
    if conn.closed:  # closed while we registered: make sure nobody waits forever
        link_lost(conn)
    return waiter


def connection_to(pid: int) -> Connection:
    w = worker_from_id(pid)
    conn = w.conn
    if conn is not None and not conn.closed:
        return conn
    return _connect_lazily(w)


def _connect_lazily(w: Worker) -> Connection:
    """Worker-to-worker links are opened on first use (Julia's lazy ``all_to_all``). From
    a served call, interrupts wait until the link is made (or not): one that landed in
    the handshake would leave a half-made link, or a thread it starts half-started."""
    user_call = THREAD.user_call
    if user_call is None:
        return _connect(w)
    with user_call.interrupts_held():
        return _connect(w)


def _connect(w: Worker) -> Connection:
    with w.connect_lock:
        if w.conn is not None and not w.conn.closed:
            return w.conn
        if w.conn is not None and w.conn.closed:
            raise link_lost(w.conn)
        if w.state is WorkerState.TERMINATED:
            raise ProcessExitedException(w.id, w.exit_reason)
        if PGRP.myid == 1:
            raise ProcessExitedException(w.id, "not connected")
        if PGRP.topology == "master_worker":
            raise RuntimeError(
                f"worker {PGRP.myid} cannot reach worker {w.id}: the cluster topology is "
                "'master_worker', where workers talk only to pid 1"
            )
        if PGRP.allowed_peers is not None and w.id not in PGRP.allowed_peers:
            raise RuntimeError(f"worker {PGRP.myid} is not connected to worker {w.id} in this 'custom' topology")
        try:
            return open_connection_to_peer(w)
        except (OSError, HandshakeError) as exc:
            raise ProcessExitedException(w.id, f"cannot connect: {exc}") from exc


def open_connection_to_peer(w: Worker) -> Connection:
    """Dial worker ``w``: over its Unix socket if it runs on this host and in this network
    namespace (and no custom manager decides how workers connect), else the manager's way
    (TCP by default). The handshake proves both ends hold the cookie and that the other
    end is ``w``; a Unix socket held by anyone else is passed over for TCP."""
    from .managers import DefaultClusterManager, WorkerConfig

    transport = None
    if w.local_address and PGRP.manager is None and same_host(w.local_address):
        sock = _dial_locally(w.local_address)
        if sock is not None:
            transport = make_transport(sock, sock)
            try:
                connect_handshake(transport, cluster_cookie(), me=PGRP.myid, target=w.id)
            except HandshakeError as exc:
                log.warning("not using worker %d's Unix socket: %s", w.id, exc)
                transport.close()
                transport = None
    if transport is None:
        manager = PGRP.manager or DefaultClusterManager()
        instream, outstream = manager.connect(w.id, WorkerConfig(connect_at=w.connect_at))
        transport = make_transport(instream, outstream)
        connect_handshake(transport, cluster_cookie(), me=PGRP.myid, target=w.id)
    conn = Connection(transport, w.id)
    conn.send_frame(MsgType.IDENTIFY_SOCKET, b"")  # who we are, the handshake has proven
    transport.set_timeout(worker_timeout())
    try:
        ack = conn.read_frame()
    except (OSError, EOFError) as exc:  # the timeout included
        conn.close(f"no identify acknowledgement: {exc}")
        raise ConnectionError(f"worker {w.id} did not acknowledge our connection: {exc}") from exc
    transport.set_timeout(None)
    if ack is None or ack.msg_type != MsgType.IDENTIFY_ACK:
        conn.close("no identify acknowledgement")
        raise ConnectionError(f"worker {w.id} did not acknowledge our connection")
    attach_connection(w, conn)
    return conn


def local_socket_name() -> str:
    """A fresh abstract Unix socket name that says which kernel (boot id) and network
    namespace it lives in: the same name means another socket anywhere else."""
    return f"\0clustercore-{_host_key()}-{os.getpid()}-{os.urandom(8).hex()}"


def same_host(address: str) -> bool:
    """Whether the abstract socket ``address`` was named on this host, in this namespace."""
    return address.startswith(f"\0clustercore-{_host_key()}-")


_HOST_KEY: list[str] = []


def _host_key() -> str:
    if not _HOST_KEY:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
            netns = os.stat("/proc/self/ns/net").st_ino
        except OSError:  # not Linux: abstract sockets are not used
            boot, netns = "unknown", 0
        _HOST_KEY.append(f"{boot}-{netns}")
    return _HOST_KEY[0]


def _dial_locally(address: str) -> socket.socket | None:
    """A connection to an abstract Unix socket; None when nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(worker_timeout())
        sock.connect(address)
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    return sock


# --- connections ------------------------------------------------------------------------


def attach_connection(w: Worker, conn: Connection) -> None:
    """Make ``conn`` the link to ``w`` and start serving it."""
    from .message_handlers import handle_msg

    conn.peer = w.id
    conn.set_before_send(lambda: take_gc_frames(w), w.gc_ops)
    if PGRP.myid == 1:
        conn.enable_polling()  # the driver's callers read their own replies
    with PGRP.lock:
        if w.conn is None or w.conn.closed:
            w.conn = conn
        if w.state is WorkerState.CREATED:
            w.state = WorkerState.CONNECTED
    PGRP.runner.serve(conn, handle_msg, on_connection_closed)


def serve_incoming(conn: Connection) -> None:
    """Serve an accepted link whose peer is known (after identification)."""
    from .message_handlers import handle_msg

    PGRP.runner.serve(conn, handle_msg, on_connection_closed)


def take_gc_frames(w: Worker) -> list[Any]:
    """Pending reference-count updates for ``w``'s owner table, as one frame."""
    if not w.gc_ops:
        return []
    from ..wire.framing import encode_frame

    with PGRP.lock:  # emptied in place: the connection watches this very list
        ops = w.gc_ops[:]
        w.gc_ops.clear()
    if not ops:
        return []
    return encode_frame(MsgType.GC, pickle.dumps(ops, protocol=5))


def fail_waiters(conn: Connection) -> None:
    waiters = conn.waiters
    while waiters:
        _, waiter = waiters.popitem()
        waiter.set(ProcessExitedException(conn.peer, conn.close_reason), failed=True)


def link_lost(conn: Connection, reason: str = "") -> ProcessExitedException:
    """Handle ``conn``'s end now, in the thread that found it (see
    :func:`on_connection_closed`); the exception that thread should raise."""
    on_connection_closed(conn)
    # the first reason recorded wins: a manager that closed the link saying why (an
    # OOMKilled pod) is not overruled by what the closed socket then told this caller
    return ProcessExitedException(conn.peer, conn.close_reason or reason)


def on_connection_closed(conn: Connection) -> None:
    """A link ended. If it was a worker's main link the worker is forgotten first, so
    whoever its end wakes (a waiter, a caller) already sees it gone from ``workers()``.

    Runs in whichever thread first finds the link dead; running it again is harmless.
    """
    pid = conn.peer
    with PGRP.lock:
        w = PGRP.workers.get(pid)
        is_main_link = w is not None and w.conn is conn
    if not is_main_link:
        fail_waiters(conn)
    elif PGRP.myid != 1 and pid == 1:
        from .worker import exit_worker

        fail_waiters(conn)
        exit_worker("the driver (pid 1) closed its connection")
    else:
        deregister_worker(pid, conn.close_reason)


def deregister_worker(pid: int, reason: str = "") -> None:
    """Forget ``pid``: its waiters fail, pid 1 tells the others and its manager."""
    with PGRP.lock:
        w = PGRP.workers.get(pid)
        if w is None or w.state is WorkerState.TERMINATED:
            return
        was_terminating = w.state is WorkerState.TERMINATING
        w.state = WorkerState.TERMINATED
        w.exit_reason = reason
        PGRP.exited[pid] = reason
        del PGRP.workers[pid]
    if w.conn is not None:
        w.conn.close(reason or "worker removed")
        fail_waiters(w.conn)
    if PGRP.myid == 1:
        _after_driver_lost_worker(w, was_terminating)
    w.gone.set()


def _after_driver_lost_worker(w: Worker, was_terminating: bool) -> None:
    _tell(_left_listeners, w.id)
    if w.manager is not None and w.config is not None:
        manager, config = w.manager, w.config
        try:
            manager.manage(w.id, config, "deregister")
        except Exception:
            log.exception("manage(deregister) failed for worker %d", w.id)
        if not was_terminating:  # died by itself: make sure nothing is left behind
            threading.Thread(target=_kill_quietly, args=(manager, w.id, config), daemon=True).start()


def lose_worker(pid: int, reason: str) -> None:
    """A manager found worker ``pid`` gone: close its link saying ``reason`` and forget it,
    so everything waiting on it fails with that reason. Unknown pids are ignored."""
    with PGRP.lock:
        w = PGRP.workers.get(pid)
    if w is None:
        return
    if w.conn is not None:
        w.conn.close(reason)
    deregister_worker(pid, reason)


# --- what the layers above hear of ----------------------------------------------------

WorkerListener = Callable[[int], None]
_joined_listeners: list[WorkerListener] = []
_left_listeners: list[WorkerListener] = []


def on_worker_joined(listener: WorkerListener) -> None:
    """Call ``listener(pid)`` on pid 1 after each new worker has joined (in pid order)."""
    _joined_listeners.append(listener)


def on_worker_left(listener: WorkerListener) -> None:
    """Call ``listener(pid)`` on pid 1 when a worker has been forgotten, before its manager hears."""
    _left_listeners.append(listener)


def announce_joined(pids: list[int]) -> None:
    """Pid 1 has finished adding ``pids``: tell the listeners."""
    for pid in sorted(pids):
        _tell(_joined_listeners, pid)


def _tell(listeners: list[WorkerListener], pid: int) -> None:
    for listener in tuple(listeners):
        try:
            listener(pid)
        except Exception:
            log.exception("a listener failed for worker %d", pid)


def _kill_quietly(manager: ClusterManager, pid: int, config: WorkerConfig) -> None:
    try:
        manager.kill(pid, config)
        manager.manage(pid, config, "finalize")
    except Exception:
        log.debug("cleaning up worker %d failed", pid, exc_info=True)


def add_peers(peers: list[PeerInfo]) -> None:
    """Learn about workers this process may reach (lazily connected)."""
    with PGRP.lock:
        for peer in peers:
            if peer.pid == PGRP.myid or peer.pid in PGRP.workers or peer.pid in PGRP.exited:
                continue
            w = PGRP.workers[peer.pid] = Worker(peer.pid, peer.connect_at, peer.hostname)
            w.local_address = peer.local_address
