"""The worker side: listening, joining the cluster, serving, exiting.

``clustercore worker`` runs :func:`start_worker`: read the cookie from the
first line of stdin, listen on TCP (and, on Linux, on an abstract Unix socket
that other workers on the same host dial instead), print
``clustercore_worker:PORT#HOST``, wait for
pid 1's ``JoinPGRP`` (exit if it does not come within
``CLUSTERCORE_WORKER_TIMEOUT``), then run calls on the main thread until
told to exit or until the link to pid 1 closes (no orphans).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import faulthandler
import functools
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from ..errors import HandshakeError
from ..links import establish
from ..links.connection import Connection
from ..logs import LazyLogger
from ..wire import handshake, serialize
from ..wire.transport import make_transport
from . import cluster, peers
from .cluster import PGRP, Worker, exit_worker, worker_timeout
from .messages import JoinComplete, JoinPGRP, MsgType, PeerTable

if TYPE_CHECKING:
    from .managers import ClusterManager

log = LazyLogger(__name__)
_joined = threading.Event()


def init_worker(cookie: str, manager: ClusterManager | None = None) -> None:
    """Make this process a worker that will be told its pid by pid 1 (Julia's ``init_worker``)."""
    cluster.cluster_cookie(cookie)
    PGRP.set_myid(0)
    PGRP.manager = manager  # None: the default connect, imported when first needed


def preload_modules() -> None:
    """Import now what a worker imports lazily for its first calls: cloudpickle (with the
    standard modules it brings: inspect, dis, ast, ...), logging, traceback and the
    engine's membership calls (each worker's first call is one of them). A fork
    server calls this once, so that each worker it forks has them instead of importing
    them at its first call (about 40 ms of CPU per worker, most of a first ``pmap`` on
    hundreds of workers); and this host's address, which each would look up (6 ms)."""
    import logging  # noqa: F401 - imported for the workers forked from here
    import traceback  # noqa: F401

    from . import membership  # noqa: F401 - what pid 1 asks of every worker as it joins

    serialize.load_cloudpickle()
    _public_address()  # the name service's libraries loaded, and the answer kept
    cluster.host_key()  # what each local socket's name starts with: read from /proc once


def start_worker(
    out: IO[str] = sys.stdout,
    cookie: str | None = None,
    *,
    close_stdin: bool = True,
    stderr_to_stdout: bool = True,
    bind_to: str | None = None,
    lifeline: bool = False,
    driver_link: socket.socket | None = None,
) -> None:
    """Run this process as a worker listening on TCP; returns only by exiting.

    ``cookie``: the line its launcher wrote (:func:`clustercore.plugin.worker_secret`:
    the cookie, and TLS credentials when the cluster uses TLS); ``None``: read it
    from the first line of stdin.

    ``driver_link``: a connected socket its launcher holds the other end of (the
    Local plugin's Unix socket pair, handed over by its fork server or inherited
    through ``--link-fd``), served like an accepted connection, so pid 1 may
    join through it instead of over TCP.

    ``CLUSTERCORE_SYS_PATH`` (``os.pathsep``-separated, taken out of the
    environment): import path entries to put after this process's first, the
    driver's own when the Local manager starts it, so a worker imports what the
    driver imported from next to its script, as Julia's workers share its project.
    """
    use_launcher_path(os.environ.pop("CLUSTERCORE_SYS_PATH", ""))
    try:  # the cookie, and the cluster's TLS credentials if it uses TLS
        cluster.take_worker_secret(sys.stdin.readline() if cookie is None else cookie)
    except ValueError as exc:
        print(f"clustercore worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if lifeline:
        threading.Thread(target=_watch_stdin, name="clustercore-lifeline", daemon=True).start()
    elif close_stdin:
        sys.stdin.close()
    if stderr_to_stdout:
        os.dup2(sys.stdout.fileno(), sys.stderr.fileno())
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    if hasattr(signal, "SIGUSR2"):  # `kill -USR2 OSPID`: every thread's stack on the worker's output, from C,
        faulthandler.register(signal.SIGUSR2, all_threads=True)  # so even while C code holds the GIL
    init_worker(cluster.cluster_cookie())
    if os.getpid() == 1:  # a container's first process: the kernel ignores a signal it does not handle
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    listener, host = _listen(bind_to)
    port = listener.getsockname()[1]
    local = _listen_locally()
    listeners = (listener,) if local is None else (listener, local)
    threading.Thread(target=_accept_forever, args=listeners, name="clustercore-accept", daemon=True).start()
    timeout = worker_timeout()
    print(f"clustercore_worker:{port}#{host}", file=out, flush=True)
    PGRP.runner.claim_main_thread()  # the link pid 1 joins through is led by this thread
    _wait_for_join(driver_link, timeout)
    PGRP.runner.serve_on_main_thread()
    exit_worker("")


def _wait_for_join(driver_link: socket.socket | None, timeout: float) -> None:
    """Let pid 1 join us, through ``driver_link`` (served here) or a connection accepted on
    a listener; exit if it has not within ``timeout`` seconds. The main thread waits: a
    thread of its own for each would cost every worker's start-up more than the wait."""
    deadline = time.monotonic() + timeout
    if driver_link is not None:
        _serve_accepted(driver_link, until=deadline)  # returns once joined, or failed or timed out
    if _joined.wait(max(0.0, deadline - time.monotonic())):
        return
    try:
        print(
            f"clustercore worker: pid 1 did not connect within {timeout:g} s (CLUSTERCORE_WORKER_TIMEOUT); exiting",
            file=sys.stderr,
            flush=True,
        )
    except (OSError, ValueError):
        pass  # nobody reads our output any more: a driver that died before joining us
    finally:
        exit_worker("not joined in time", code=1)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """What SIGTERM does to any other process (a pod being deleted, ``docker stop``)."""
    os._exit(128 + signum)


def use_launcher_path(entries: str) -> None:
    """Put the ``os.pathsep``-separated ``entries`` this process lacks after its first ``sys.path`` entry."""
    missing = [p for p in dict.fromkeys(entries.split(os.pathsep)) if p and p not in sys.path]
    sys.path[1:1] = missing


def _watch_stdin() -> None:
    try:
        stdin: Any = sys.stdin.buffer
        while stdin.read1(65536):
            pass
    except (OSError, ValueError):
        pass
    exit_worker("its stdin (the launcher's lifeline) closed")


def parse_bind_to(bind_to: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]`` or ``[V6]:PORT`` -> ``(addr, port)`` (0: any port)."""
    if bind_to.startswith("["):
        host, _, rest = bind_to[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif bind_to.count(":") == 1:
        host, port_text = bind_to.split(":")
    else:
        host, port_text = bind_to, ""
    if not host or (port_text and not port_text.isdigit()):
        raise ValueError(f"--bind-to takes ADDR[:PORT], not {bind_to!r}")
    return host, int(port_text or 0)


BIND_SSH = "ssh"  # --bind-to ssh: the address the SSH connection that started us arrived on
BIND_HOST = "host"  # --bind-to host: the address this host's name resolves to, if it is one of ours


def resolve_bind_to(bind_to: str | None) -> str | None:
    """``--bind-to``'s value, with ``ssh`` and ``host`` turned into an address; ``None``:
    every interface (neither knows one: no ``SSH_CONNECTION``, a name that resolves to
    a loopback address)."""
    if bind_to == BIND_HOST:  # a name that resolves to loopback (one machine, a laptop's Slurm): all, quietly
        public = _public_address()
        return None if public.startswith("127.") else public
    if bind_to != BIND_SSH:
        return bind_to
    fields = os.environ.get("SSH_CONNECTION", "").split()  # client, its port, server, its port
    address = fields[2] if len(fields) == 4 and "%" not in fields[2] else None  # not a link-local scope
    if address is None:
        print(
            f"clustercore worker: --bind-to {bind_to}: no address known here; listening on every interface",
            file=sys.stderr,
        )
    return address


def _listen(bind_to: str | None) -> tuple[socket.socket, str]:
    wanted = resolve_bind_to(bind_to)
    host, port = parse_bind_to(wanted) if wanted else ("0.0.0.0", 0)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        if wanted == bind_to:  # the user's own address: theirs to fix
            raise
        print(f"clustercore worker: cannot listen on {host} ({exc}); listening on every interface", file=sys.stderr)
        listener.close()
        return _listen(None)
    listener.listen(128)
    shown = host if host not in ("0.0.0.0", "::") else _public_address()
    return listener, f"[{shown}]" if ":" in shown else shown


def _listen_locally() -> socket.socket | None:
    """Also listen on an abstract Unix socket with a random name (Linux), which other
    workers on this host dial instead of TCP; its name goes to pid 1 when we join."""
    if not sys.platform.startswith("linux"):
        return None
    address = cluster.local_socket_name()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError:
        listener.close()
        return None
    PGRP.local_address = address
    return listener


@functools.cache  # a fork server looks it up once for all its workers (preload_modules)
def _public_address() -> str:
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    except OSError:
        pass
    return "127.0.0.1"


# --- accepting: what a connection may cost before it authenticates ------------------

PREAUTH_LIMIT = 128  # connections per listener not yet authenticated: a descriptor each
PREAUTH_THREADS = 32  # of those, how many may be authenticating on threads of their own at once
PREAUTH_DEADLINE = handshake.DEFAULT_DEADLINE  # seconds from accept() to a thread; the handshake has its own
HELLO_AT_LEAST = len(handshake.MAGIC) + handshake.NONCE_LEN  # a connector's first bytes, sent before it waits
TLS_HANDSHAKE_RECORD = 0x16  # a TLS record's first byte when it carries a ClientHello (then 3, the major version)
HELLO_RECHECK = 0.25  # seconds between looks at a hello that comes in pieces
ACCEPT_BATCH = 16  # accepts in a row before the connections already there get a look
ACCEPT_BACKOFF = (0.05, 2.0)  # the first and the longest pause after accept() or a thread start failed
REJECTIONS_LOG_INTERVAL = 10.0  # seconds: at most one "rejected a connection" line per worker in each
_REJECTED = "rejected a connection: %s"  # process_messages logs its rejections with this template too
_PAUSED = "%s; accepting again in %.2g s"
_LISTENER_GONE = (errno.EBADF, errno.EINVAL, errno.ENOTSOCK)
_PEER_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET)  # that one connection's trouble


def _accept_forever(*listeners: socket.socket) -> None:
    """Accept connections on ``listeners`` until they are closed; see :class:`_Gate`.

    Nothing else ends it: a failed ``accept()`` (``EMFILE``, ``ENFILE``, ...) or
    thread start pauses accepting (briefly, longer each time up to 2 s) and
    logs it. Rejections, the gate's and :func:`process_messages`' alike, print
    at most one line per ``REJECTIONS_LOG_INTERVAL`` with a count.
    """
    log.limit(_REJECTED, REJECTIONS_LOG_INTERVAL)
    log.limit(_PAUSED, REJECTIONS_LOG_INTERVAL)
    _Gate(listeners).run()


def _serve_accepted(sock: socket.socket, until: float | None = None) -> None:
    """Authenticate an accepted connection and serve it (on the calling thread)."""
    process_messages(sock, sock, incoming=True, until=until)


class _Door:
    """One listener of a :class:`_Gate` and what it holds: its limits are its own, so a
    flood on one (a TCP port anyone reaches) locks nobody out of the other."""

    __slots__ = ("fd", "listening", "ready", "sock", "threads", "tls", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = PGRP.tls is not None and sock.family != socket.AF_UNIX  # what a peer must start with
        self.listening = False
        self.waiting = 0  # its connections whose peer has not spoken
        self.ready = 0  # ... that have, waiting for a thread
        self.threads = 0  # ... handed to a thread that has not returned yet

    def total(self) -> int:
        return self.waiting + self.ready + self.threads


class _Pending:
    """An accepted connection that has no thread yet."""

    __slots__ = ("deadline", "door", "fd", "next_look", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, deadline: float, door: _Door) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.door = door  # the listener it came through
        self.deadline = deadline
        self.next_look: float | None = None  # None: polled for input; else when to look again


class _Gate:
    """A worker's listeners and the connections on them that have not authenticated, on
    one thread.

    A connection costs no thread while its peer has not sent the start of a
    handshake: this thread polls it and peeks (never reads) until
    ``HELLO_AT_LEAST`` bytes beginning with the handshake's magic are there.
    Then it waits for one of ``PREAUTH_THREADS`` places, each a thread that
    runs :func:`process_messages` on it, which reads those bytes and
    authenticates as ever. Garbage, early closes and waits past
    ``PREAUTH_DEADLINE`` are rejected here.

    At most ``PREAUTH_LIMIT`` connections of each listener are in any of these
    phases. A newcomer beyond that closes the oldest one of its listener whose peer
    has not spoken, so a flood of silent connections locks out no peer that speaks;
    when every one has spoken, that listener stops accepting until one is through,
    and newcomers wait in the kernel's listen backlog instead of being refused.
    """

    def __init__(self, listeners: tuple[socket.socket, ...]) -> None:
        self.doors = {door.fd: door for door in map(_Door, listeners)}  # those not closed yet
        self.poller = select.poll()
        self.waiting: dict[int, _Pending] = {}  # peers that have not spoken, by descriptor, oldest first
        self.ready: collections.deque[_Pending] = collections.deque()  # peers that have, waiting for a thread
        self.threads = 0  # connections handed to a thread that has not returned yet
        self.ended = False
        self._threads_lock = threading.Lock()
        self.wake_r, self.wake_w = os.pipe()  # a thread that returns writes a byte: a place is free
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.poller.register(self.wake_r, select.POLLIN)
        self.paused_until = 0.0
        self.backoff = 0.0
        self.log_due: float | None = None

    def run(self) -> None:
        for door in self.doors.values():
            door.sock.setblocking(False)
        try:
            while self._open():
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - nothing but closed listeners end the loop
                    if not self._open():
                        return
                    self._pause(time.monotonic(), f"the accept loop failed: {exc!r}")
        finally:
            self._end()

    def _open(self) -> bool:
        """Drop the listeners that were closed; whether any is left."""
        for door in list(self.doors.values()):
            if door.sock.fileno() < 0:
                self._drop(door)
        return bool(self.doors)

    def _drop(self, door: _Door) -> None:
        if door.listening:
            self.poller.unregister(door.fd)
        del self.doors[door.fd]

    def _step(self) -> None:
        now = time.monotonic()
        for door in self.doors.values():
            self._listen(door, now >= self.paused_until and (door.total() < PREAUTH_LIMIT or door.waiting > 0))
        events = self.poller.poll(self._timeout_ms(now))
        now = time.monotonic()
        accept: list[_Door] = []
        for fd, mask in events:
            if (listener := self.doors.get(fd)) is not None:
                if mask & (select.POLLHUP | select.POLLNVAL):  # a listener once shut down, or closed
                    self._drop(listener)
                else:
                    accept.append(listener)
            elif fd == self.wake_r:
                with contextlib.suppress(OSError):
                    os.read(self.wake_r, 4096)
            elif (pending := self.waiting.get(fd)) is not None and pending.next_look is None:
                self._look(pending, now)
        for door in accept:  # after the looks: a peer that has spoken is not taken for silent
            if door.fd in self.doors and not self._accept(door, now):
                self._drop(door)
        self._on_time(now)

    def _timeout_ms(self, now: float) -> int | None:
        times = [p.deadline for p in self.waiting.values()]
        times += [p.next_look for p in self.waiting.values() if p.next_look is not None]
        if self.ready:
            times.append(self.ready[0].deadline)
        if self.paused_until > now:
            times.append(self.paused_until)
        if self.log_due is not None:
            times.append(self.log_due)
        return max(0, int((min(times) - now) * 1000) + 1) if times else None

    def _on_time(self, now: float) -> None:
        for pending in tuple(self.waiting.values()):
            if now >= pending.deadline:
                self._reject(pending, f"{pending.peer} did not start a handshake within {PREAUTH_DEADLINE:g} s")
            elif pending.next_look is not None and now >= pending.next_look:
                self._look(pending, now)
        while self.ready and now >= self.ready[0].deadline:  # oldest first: the rest are younger
            late = self.ready.popleft()
            late.door.ready -= 1
            late.sock.close()
            log.warning(_REJECTED, f"{late.peer} waited {PREAUTH_DEADLINE:g} s for one of {PREAUTH_THREADS} handshakes")
        self._dispatch(now)
        self.log_due = log.flush_limits()  # counts held back, here or by process_messages' threads

    def _listen(self, door: _Door, on: bool) -> None:
        if on and not door.listening:
            self.poller.register(door.fd, select.POLLIN)
        elif not on and door.listening:
            self.poller.unregister(door.fd)
        door.listening = on

    def _accept(self, door: _Door, now: float) -> bool:
        """Take what ``door`` has, while there is room; False once it is closed."""
        for _ in range(ACCEPT_BATCH):
            full = door.total() >= PREAUTH_LIMIT
            if self.paused_until > now or (full and not door.waiting):
                return True  # the rest wait in the backlog
            try:
                sock, addr = door.sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in _LISTENER_GONE or door.sock.fileno() < 0:
                    return False
                if exc.errno not in _PEER_GONE:
                    self._pause(now, f"could not accept a connection: {exc}")
                    return True
                continue
            self.backoff = 0.0
            if full:
                oldest = next(p for p in self.waiting.values() if p.door is door)
                self._reject(oldest, f"{oldest.peer} was dropped for a newer connection: {PREAUTH_LIMIT} were waiting")
            pending = _Pending(sock, _describe_peer(sock, addr), now + PREAUTH_DEADLINE, door)
            self.waiting[pending.fd] = pending
            door.waiting += 1
            self.poller.register(pending.fd, select.POLLIN)
            self._look(pending, now)
        return True

    def _look(self, pending: _Pending, now: float) -> None:
        """Peek at what the peer has sent: reject it, look again later, or queue it for a thread."""
        try:
            head = pending.sock.recv(HELLO_AT_LEAST, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._reject(pending, f"{pending.peer}: {exc}")
            return
        tls = pending.door.tls
        if not head:
            self._reject(pending, f"{pending.peer} closed the connection before its handshake")
        elif not hello_ok(head, tls):
            what = "a TLS handshake (this cluster uses TLS)" if tls else "a clustercore handshake"
            self._reject(pending, f"{pending.peer} sent bytes that are not {what}")
        elif len(head) < HELLO_AT_LEAST:  # it stays readable: look again in a while, not at once
            if pending.next_look is None:
                self.poller.unregister(pending.fd)
            pending.next_look = now + HELLO_RECHECK
        else:
            self._forget(pending)
            self.ready.append(pending)
            pending.door.ready += 1
            self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        """Start a thread for each peer that has spoken, oldest first, while its listener
        has places free."""
        if now < self.paused_until:
            return
        for pending in [p for p in self.ready if p.door.threads < PREAUTH_THREADS]:
            door = pending.door
            if door.threads >= PREAUTH_THREADS:
                continue  # its listener's places filled meanwhile
            thread = threading.Thread(target=self._serve, args=(pending,), name="clustercore-incoming", daemon=True)
            with self._threads_lock:
                self.threads += 1
                door.threads += 1
            try:
                thread.start()
            except (RuntimeError, MemoryError) as exc:  # "can't start new thread": it waits while its deadline lasts
                with self._threads_lock:
                    self.threads -= 1
                    door.threads -= 1
                self._pause(now, f"could not start a thread for an incoming connection: {exc}")
                return
            self.ready.remove(pending)
            door.ready -= 1
            self.backoff = 0.0

    def _serve(self, pending: _Pending) -> None:
        try:
            _serve_accepted(pending.sock)
        finally:
            with self._threads_lock:
                self.threads -= 1
                pending.door.threads -= 1
                if not self.ended:
                    with contextlib.suppress(OSError):
                        os.write(self.wake_w, b"\0")
                elif not self.threads:
                    os.close(self.wake_w)

    def _forget(self, pending: _Pending) -> None:
        if pending.next_look is None:
            self.poller.unregister(pending.fd)
        del self.waiting[pending.fd]
        pending.door.waiting -= 1

    def _reject(self, pending: _Pending, detail: str) -> None:
        self._forget(pending)
        pending.sock.close()
        log.warning(_REJECTED, detail)

    def _pause(self, now: float, why: str) -> None:
        self.backoff = min(max(self.backoff * 2, ACCEPT_BACKOFF[0]), ACCEPT_BACKOFF[1])
        self.paused_until = now + self.backoff
        log.warning(_PAUSED, why, self.backoff)

    def _end(self) -> None:
        for pending in (*self.waiting.values(), *self.ready):
            pending.sock.close()
        self.waiting.clear()
        self.ready.clear()
        os.close(self.wake_r)
        with self._threads_lock:  # the last thread to return closes the other end
            self.ended = True
            if not self.threads:
                os.close(self.wake_w)


def hello_ok(head: bytes, tls: bool) -> bool:
    """Whether a peer's first bytes can start a handshake (a TLS one if ``tls``)."""
    if tls:
        return len(head) < 2 or (head[0] == TLS_HANDSHAKE_RECORD and head[1] == 3)
    return head[: len(handshake.MAGIC)] == handshake.MAGIC[: len(head)]


def _describe_peer(sock: socket.socket, addr: Any) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:  # a Unix socket: the process on the other end
        pid, uid, _ = handshake.PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, handshake.PEERCRED.size)
        )
    except (AttributeError, OSError):
        return "a local peer"
    return f"local pid {pid} (uid {uid})"


def process_messages(r_stream: Any, w_stream: Any, incoming: bool = True, *, until: float | None = None) -> None:
    """Authenticate a link and serve it (Julia's ``process_messages``); for custom transports.

    Nothing from the peer is unpickled before the handshake has proven that it holds the
    cookie and which pid it is: only pid 1 may make this worker join, only another
    worker may identify itself. ``until`` (``time.monotonic()``): give up on a peer that
    has not authenticated and sent its first message by then (else the handshake's own
    deadline, then ``worker_timeout()`` for the first message).
    """
    transport = make_transport(r_stream, w_stream)
    handshake_s, first_s = handshake.DEFAULT_DEADLINE, worker_timeout()
    try:
        if until is not None:
            handshake_s = min(handshake_s, max(0.001, until - time.monotonic()))
        if incoming:
            transport, dialer = establish.accept(
                transport, cluster.cluster_cookie(), PGRP.tls, me=PGRP.myid, deadline=handshake_s
            )
        else:
            transport = establish.dial(
                transport, cluster.cluster_cookie(), PGRP.tls, me=PGRP.myid, target=1, deadline=handshake_s
            )
            dialer = 1
        conn = Connection(transport, dialer)
        if until is not None:
            first_s = min(first_s, max(0.001, until - time.monotonic()))
        transport.set_timeout(first_s)
        first = conn.read_frame()
        transport.set_timeout(None)
    except (HandshakeError, OSError, EOFError) as exc:
        log.warning("rejected a connection: %s", exc)
        transport.close()
        return
    if first is None:
        transport.close()
        return
    if first.msg_type == MsgType.JOIN_PGRP and dialer == 1:
        _join_cluster(conn, serialize.loads(first.payload, first.buffers))
    elif first.msg_type == MsgType.IDENTIFY_SOCKET and dialer > 1 and PGRP.myid:
        _identify_peer(conn, dialer)
    else:
        log.warning("closing a connection from pid %d whose first message was of type %d", dialer, first.msg_type)
        transport.close()


def _join_cluster(conn: Connection, join: JoinPGRP) -> None:
    """Pid 1 tells us who we are (Julia's ``JoinPGRPMsg`` handler)."""
    if _joined.is_set():
        log.warning("a second JoinPGRP was ignored")
        conn.close()
        return
    PGRP.set_myid(join.self_pid)
    PGRP.topology, PGRP.lazy = join.topology, join.lazy
    PGRP.driver_hostname = join.driver_hostname
    if join.topology == "custom":
        told = join.peers.read() if isinstance(join.peers, PeerTable) else join.peers
        PGRP.allowed_peers = {p.pid for p in told}
    driver = Worker(1, None, join.driver_hostname)
    with PGRP.lock:
        PGRP.workers[1] = driver
    cluster.add_peers(join.peers)
    if not join.enable_threaded_blas:
        _limit_blas_threads()
    try:
        for pid in join.connect_now:
            peers.connection_to(pid)
        reply: Any = JoinComplete(os.cpu_count() or 1, os.getpid(), PGRP.hostname, PGRP.local_address)
    except Exception as exc:  # noqa: BLE001 - tell pid 1 why we cannot join
        reply = exc
    payload, buffers = serialize.dumps(reply)
    conn.send_frame(MsgType.JOIN_COMPLETE, payload, buffers)
    _joined.set()
    peers.attach_connection(driver, conn)


def _identify_peer(conn: Connection, pid: int) -> None:
    """Another worker dialed us (Julia's ``IdentifySocketMsg`` handler)."""
    with PGRP.lock:
        w = cluster.lookup_worker(pid)
        if w is None:
            w = PGRP.workers[pid] = Worker(pid)
        if PGRP.allowed_peers is not None:
            PGRP.allowed_peers.add(pid)
    conn.send_frame(MsgType.IDENTIFY_ACK, b"")
    if w.conn is None or w.conn.closed:
        peers.attach_connection(w, conn)
    else:  # both dialed at once: keep serving this link too
        conn.peer = pid
        peers.serve_incoming(conn)


def _limit_blas_threads() -> None:
    """One BLAS thread in the libraries already loaded (those loaded later read the
    ``*_NUM_THREADS`` variables the launcher set). Most workers have none loaded when they
    join: they skip the import, which costs each worker a search of ``sys.path`` when
    threadpoolctl is not installed."""
    if not any(name in sys.modules for name in _BLAS_USERS):
        return
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        return
    threadpool_limits(1, "blas")


_BLAS_USERS = ("numpy", "scipy", "torch", "sklearn", "jax", "tensorflow")
