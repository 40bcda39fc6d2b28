"""Process-group state: who is in the cluster and how to reach them.

One owner for mutable cluster state: the :data:`PGRP` object (Julia's
``PGRP``). Pid 1 is the driver; workers are 2, 3, ... and pids are never
reused. Each process knows the workers it may talk to (``Worker`` records);
a record gets its connection when pid 1 creates the worker or, between
workers, lazily on first use.
"""

from __future__ import annotations

import atexit
import itertools
import os
import socket
import sys
import threading
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ProcessExitedException
from ..links.connection import Connection
from ..logs import LazyLogger
from ..wire import serialize
from ..wire.framing import NO_REF
from .callrunner import CallRunner
from .messages import PeerInfo, PeerTable

if TYPE_CHECKING:
    from ..links.credentials import TLSCredentials
    from .launching import WorkerConfig
    from .managers import ClusterManager

log = LazyLogger(__name__)
_exiting = threading.Lock()
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
        self.launched = 0.0  # on pid 1: time.monotonic() when the launch that started it began
        self.joined = 0.0  # on pid 1: time.monotonic() when it joined

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


WorkerListener = Callable[[int], None]


class ProcessGroup:
    """The cluster as this process sees it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.myid = 1
        self.workers: dict[int, Worker] = {}
        self.unread_peers: list[PeerTable] = []  # peers told of in bulk: records made on first need
        self.exited: dict[int, str] = {}
        self.topology = "all_to_all"
        self.lazy = True
        self.allowed_peers: set[int] | None = None  # custom topology: who we may reach
        self.manager: ClusterManager | None = None  # how this process reaches other workers
        self.cookie: str | None = None
        self.tls: TLSCredentials | None = None  # set: every link that is not a Unix socket uses TLS
        self.refs: dict[Any, Any] = {}  # RRID -> RemoteValue: what this process owns (refs.py)
        self.joined_listeners: list[WorkerListener] = []  # on pid 1, told of each new worker
        self.left_listeners: list[WorkerListener] = []  # on pid 1, told of each worker forgotten
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
    if cookie is not None and cookie != PGRP.cookie:  # the one it has is checked already
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


TLS_ENV = "CLUSTERCORE_TLS"  # "1": clusters use TLS unless addprocs says otherwise


def use_tls(setting: bool | TLSCredentials | None) -> None:
    """Settle, as workers are added (pid 1), whether links between hosts use TLS.

    ``True`` makes a CA and certificate for this cluster (once); :class:`TLSCredentials`
    are the user's own; ``None`` keeps what the running workers use, or for a
    cluster's first workers follows ``CLUSTERCORE_TLS``. Workers of one cluster all
    use TLS or none does: asking otherwise while workers run is a ``ValueError``.
    """
    from ..links.credentials import TLSCredentials  # not before a cluster asks: a worker imports no more than it needs

    if setting is not None and not isinstance(setting, (bool, TLSCredentials)):
        raise TypeError(f"tls must be True, False or TLSCredentials, not {type(setting).__name__}")
    if PGRP.workers:
        running = PGRP.tls
        if isinstance(setting, TLSCredentials):
            conflict = setting != running
        else:
            conflict = setting is not None and setting != (running is not None)
        if conflict:
            now = "use other TLS credentials" if running and setting else "use TLS" if running else "do not use TLS"
            raise ValueError(f"this cluster's running workers {now}; cannot add workers with tls={setting!r}")
        return
    if setting is None:
        setting = tls_from_environment()
    if isinstance(setting, TLSCredentials):
        PGRP.tls = setting
    elif not setting:
        PGRP.tls = None
    elif PGRP.tls is None:
        from ..links.certificates import make_cluster_credentials

        PGRP.tls = make_cluster_credentials(os.urandom(8).hex())  # a name that says nothing of the cookie


def tls_from_environment() -> bool:
    """``CLUSTERCORE_TLS`` as a switch (off when unset); ``ValueError`` for a value that is neither on nor off."""
    return env_switch(TLS_ENV, default=False)


_SWITCH_ON, _SWITCH_OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_switch(name: str, default: bool) -> bool:
    """Environment variable ``name`` as an on/off switch: ``1``/``true``/``yes``/``on`` or
    ``0``/``false``/``no``/``off``, any case; unset or empty is ``default``. Anything else
    is a ``ValueError`` naming the variable: a misspelt switch is said, never guessed."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _SWITCH_ON + _SWITCH_OFF:
        raise ValueError(f"{name}={value!r}: use 1 (on) or 0 (off); true/false, yes/no and on/off work too")
    return value in _SWITCH_ON


def worker_secret() -> str:
    """The line a launched worker reads first on its stdin: the cookie, then the
    cluster's TLS credentials when it uses TLS (one word each, a space between)."""
    cookie = cluster_cookie()
    return cookie if PGRP.tls is None else f"{cookie} {PGRP.tls.encode()}"


def take_worker_secret(line: str) -> None:
    """A worker's side of :func:`worker_secret`: set the cookie and TLS credentials.
    ``ValueError`` names what is wrong with ``line``."""
    cookie, _, tls = line.strip().partition(" ")
    if not cookie:
        raise ValueError("no cluster cookie on the first line of stdin")
    cluster_cookie(cookie)
    PGRP.tls = None
    if tls:
        from ..links.credentials import TLSCredentials

        creds = TLSCredentials.decode(tls)
        creds.check()  # unusable credentials end the worker now, not each link later
        PGRP.tls = creds


def procs(pid: int | None = None) -> list[int]:
    """All pids, ascending; with ``pid``, those on the same host as ``pid``."""
    read_peers()
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
    read_peers()
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


# --- pickling for a peer --------------------------------------------------------------------------


def dumps_for(dest: int, obj: Any, dumps: Any = serialize.dumps) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` for ``dest`` with ``dumps``; remote references sent along are counted for it."""
    previous = SERIAL_CTX.dest
    SERIAL_CTX.dest = dest
    try:
        return dumps(obj)
    finally:
        SERIAL_CTX.dest = previous


def code_tables(conn: Connection) -> serialize.CodeTables:
    """The code ``conn``'s two ends hold for each other (made on first use, dropped with the link)."""
    tables = conn.code_tables
    if tables is None:
        with _tables_lock:
            tables = conn.code_tables
            if tables is None:
                tables = conn.code_tables = serialize.CodeTables()
    return tables  # type: ignore[no-any-return]


_tables_lock = threading.Lock()
R = TypeVar("R")


def send_obj(
    conn: Connection,
    obj: Any,
    send: Callable[[bytes, list[memoryview]], R],
    dumps: Callable[[Any, serialize.CodeSent], serialize.Pickled] = serialize.dumps_for_link,
) -> R:
    """Pickle ``obj`` for ``conn``'s peer and hand it to ``send(payload, buffers)``, which
    puts it on ``conn``; returns what ``send`` returns.

    Functions and classes that travel by value go once per link (``docs/protocol.md``,
    "Code once per link"): one thread at a time pickles for a link and hands its frame
    over, and the code a frame defines is recorded as held there once it is handed over.
    Remote references sent along are counted for the peer.
    """
    tables = conn.code_tables or code_tables(conn)
    sent = tables.sent
    ctx = SERIAL_CTX
    with sent.lock:
        previous = ctx.dest
        ctx.dest = conn.peer
        try:
            payload, buffers, delta = dumps(obj, sent)
        finally:
            ctx.dest = previous
        if delta is None:
            return send(payload, buffers)
        try:
            out = send(payload, buffers)
        except BaseException:
            sent.abandon(delta)
            raise
        sent.commit(delta)
        return out


def send_frame_obj(
    conn: Connection,
    msg_type: int,
    obj: Any,
    response: tuple[int, int] = NO_REF,
    notify: tuple[int, int] = NO_REF,
    flags: int = 0,
    dumps: Callable[[Any, serialize.CodeSent], serialize.Pickled] = serialize.dumps_for_link,
) -> None:
    """:func:`send_obj` for a frame sent as it is (``conn.send_frame``): one Python call less
    per message on the hot path."""
    tables = conn.code_tables or code_tables(conn)
    sent = tables.sent
    ctx = SERIAL_CTX
    with sent.lock:
        previous = ctx.dest
        ctx.dest = conn.peer
        try:
            payload, buffers, delta = dumps(obj, sent)
        finally:
            ctx.dest = previous
        if delta is None:
            conn.send_frame(msg_type, payload, buffers, response, notify, flags)
            return
        try:
            conn.send_frame(msg_type, payload, buffers, response, notify, flags)
        except BaseException:
            sent.abandon(delta)
            raise
        sent.commit(delta)


def add_peers(peers: list[PeerInfo] | PeerTable) -> None:
    """Learn about workers this process may reach (lazily connected); a :class:`PeerTable`
    is read when a peer is first needed (:func:`read_peers`)."""
    with PGRP.lock:
        if isinstance(peers, PeerTable):
            PGRP.unread_peers.append(peers)
        else:
            _add_peer_records(peers)


def read_peers() -> None:
    """Make the records of the peers told of in :class:`PeerTable` form, before a lookup
    that may need one (a pid not in ``PGRP.workers``, or all of them)."""
    if not PGRP.unread_peers:
        return
    with PGRP.lock:
        tables, PGRP.unread_peers = PGRP.unread_peers, []
        for table in tables:
            try:
                records = table.read()
            except Exception as exc:  # noqa: BLE001 - one bad table costs only itself
                log.warning("a table of peers could not be read and was dropped: %r", exc)
                continue
            _add_peer_records(records)


def _add_peer_records(peers: list[PeerInfo]) -> None:
    for peer in peers:
        if peer.pid == PGRP.myid or peer.pid in PGRP.workers or peer.pid in PGRP.exited:
            continue
        w = PGRP.workers[peer.pid] = Worker(peer.pid, peer.connect_at, peer.hostname)
        w.local_address = peer.local_address


def lookup_worker(pid: int) -> Worker | None:
    """``pid``'s record, reading unread peers if that is where it is; None if unknown."""
    w = PGRP.workers.get(pid)
    if w is None and PGRP.unread_peers:
        read_peers()
        w = PGRP.workers.get(pid)
    return w


def local_socket_name() -> str:
    """A fresh abstract Unix socket name that says which kernel (boot id) and network
    namespace it lives in: the same name means another socket anywhere else."""
    return f"\0clustercore-{host_key()}-{os.getpid()}-{os.urandom(8).hex()}"


def same_host(address: str) -> bool:
    """Whether the abstract socket ``address`` was named on this host, in this namespace."""
    return address.startswith(f"\0clustercore-{host_key()}-")


_HOST_KEY: list[str] = []


def host_key() -> str:
    """This host's boot id and network namespace, read once per process (a fork server's
    workers inherit it)."""
    if not _HOST_KEY:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
            netns = os.stat("/proc/self/ns/net").st_ino
        except OSError:  # not Linux: abstract sockets are not used
            boot, netns = "unknown", 0
        _HOST_KEY.append(f"{boot}-{netns}")
    return _HOST_KEY[0]


# --- what the layers above hear of ----------------------------------------------------


def on_worker_joined(listener: WorkerListener) -> None:
    """Call ``listener(pid)`` on pid 1 after each new worker has joined (in pid order).
    Once: registering a listener again does nothing, so a feature may register as it is
    first used, each time it is used."""
    _listen(PGRP.joined_listeners, listener)


def on_worker_left(listener: WorkerListener) -> None:
    """Call ``listener(pid)`` on pid 1 when a worker has been forgotten, before its manager
    hears. Once, as :func:`on_worker_joined`."""
    _listen(PGRP.left_listeners, listener)


def _listen(listeners: list[WorkerListener], listener: WorkerListener) -> None:
    if listener in listeners:  # no lock for the common case: a feature registering as it runs again
        return
    with PGRP.lock:
        if listener not in listeners:
            listeners.append(listener)


def announce_joined(pids: list[int]) -> None:
    """Pid 1 has finished adding ``pids``: tell the listeners."""
    for pid in sorted(pids):
        _tell(PGRP.joined_listeners, pid)


def tell_worker_left(pid: int) -> None:
    """Pid 1 has forgotten worker ``pid``: tell the listeners."""
    _tell(PGRP.left_listeners, pid)


def _tell(listeners: list[WorkerListener], pid: int) -> None:
    for listener in tuple(listeners):
        try:
            listener(pid)
        except Exception:
            log.exception("a listener failed for worker %d", pid)


def exit_worker(reason: str, code: int = 0) -> None:
    """End this worker process now, running ``atexit`` handlers and flushing output."""
    if not _exiting.acquire(blocking=False):
        return
    if reason:
        log.debug("worker %d exiting: %s", PGRP.myid, reason)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
