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

import atexit
import os
import socket
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from . import cluster
from .cluster import PGRP, Worker, worker_timeout
from .connection import Connection
from .errors import HandshakeError
from .logs import LazyLogger
from .messages import JoinComplete, JoinPGRP, MsgType
from .wire import serialize
from .wire.handshake import accept_handshake, connect_handshake
from .wire.transport import make_transport

if TYPE_CHECKING:
    from .managers import ClusterManager

log = LazyLogger(__name__)
_joined = threading.Event()
_exiting = threading.Lock()


def init_worker(cookie: str, manager: ClusterManager | None = None) -> None:
    """Make this process a worker that will be told its pid by pid 1 (Julia's ``init_worker``)."""
    cluster.cluster_cookie(cookie)
    PGRP.set_myid(0)
    PGRP.manager = manager  # None: the default connect, imported when first needed


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

    ``driver_link``: a connected socket its launcher holds the other end of (the
    Local plugin's Unix socket pair, handed over by its fork server or inherited
    through ``--link-fd``), served like an accepted connection, so pid 1 may
    join through it instead of over TCP.
    """
    if cookie is None:
        cookie = sys.stdin.readline().strip()
        if not cookie:
            print("clustercore worker: no cluster cookie on the first line of stdin", file=sys.stderr)
            raise SystemExit(2)
    if lifeline:
        threading.Thread(target=_watch_stdin, name="clustercore-lifeline", daemon=True).start()
    elif close_stdin:
        sys.stdin.close()
    if stderr_to_stdout:
        os.dup2(sys.stdout.fileno(), sys.stderr.fileno())
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    init_worker(cookie)
    listener, host = _listen(bind_to)
    port = listener.getsockname()[1]
    threading.Thread(target=_accept_forever, args=(listener,), name="clustercore-accept", daemon=True).start()
    local = _listen_locally()
    if local is not None:
        threading.Thread(target=_accept_forever, args=(local,), name="clustercore-accept-local", daemon=True).start()
    if driver_link is not None:
        threading.Thread(target=_serve_accepted, args=(driver_link,), name="clustercore-incoming", daemon=True).start()
    timeout = worker_timeout()
    print(f"clustercore_worker:{port}#{host}", file=out, flush=True)
    threading.Thread(target=_exit_unless_joined, args=(timeout,), name="clustercore-join-timer", daemon=True).start()
    PGRP.runner.serve_on_main_thread()
    exit_worker("")


def _watch_stdin() -> None:
    try:
        stdin: Any = sys.stdin.buffer
        while stdin.read1(65536):
            pass
    except (OSError, ValueError):
        pass
    exit_worker("its stdin (the launcher's lifeline) closed")


def _exit_unless_joined(timeout: float) -> None:
    if _joined.wait(timeout):
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


def _listen(bind_to: str | None) -> tuple[socket.socket, str]:
    host, port = parse_bind_to(bind_to) if bind_to else ("0.0.0.0", 0)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
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


def _public_address() -> str:
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    except OSError:
        pass
    return "127.0.0.1"


def _accept_forever(listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_accepted, args=(sock,), name="clustercore-incoming", daemon=True).start()


def _serve_accepted(sock: socket.socket) -> None:
    process_messages(sock, sock, incoming=True)


def process_messages(r_stream: Any, w_stream: Any, incoming: bool = True) -> None:
    """Authenticate a link and serve it (Julia's ``process_messages``); for custom transports.

    Nothing from the peer is unpickled before the handshake has proven that it holds the
    cookie and which pid it is: only pid 1 may make this worker join, only another
    worker may identify itself.
    """
    transport = make_transport(r_stream, w_stream)
    try:
        if incoming:
            dialer = accept_handshake(transport, cluster.cluster_cookie(), me=PGRP.myid)
        else:
            connect_handshake(transport, cluster.cluster_cookie(), me=PGRP.myid, target=1)
            dialer = 1
        conn = Connection(transport, dialer)
        transport.set_timeout(worker_timeout())
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
        PGRP.allowed_peers = {p.pid for p in join.peers}
    driver = Worker(1, None, join.driver_hostname)
    with PGRP.lock:
        PGRP.workers[1] = driver
    cluster.add_peers(join.peers)
    if not join.enable_threaded_blas:
        _limit_blas_threads()
    try:
        for pid in join.connect_now:
            cluster.connection_to(pid)
        reply: Any = JoinComplete(os.cpu_count() or 1, os.getpid(), PGRP.hostname, PGRP.local_address)
    except Exception as exc:  # noqa: BLE001 - tell pid 1 why we cannot join
        reply = exc
    payload, buffers = serialize.dumps(reply)
    conn.send_frame(MsgType.JOIN_COMPLETE, payload, buffers)
    _joined.set()
    cluster.attach_connection(driver, conn)


def _identify_peer(conn: Connection, pid: int) -> None:
    """Another worker dialed us (Julia's ``IdentifySocketMsg`` handler)."""
    with PGRP.lock:
        w = PGRP.workers.get(pid)
        if w is None:
            w = PGRP.workers[pid] = Worker(pid)
        if PGRP.allowed_peers is not None:
            PGRP.allowed_peers.add(pid)
    conn.send_frame(MsgType.IDENTIFY_ACK, b"")
    if w.conn is None or w.conn.closed:
        cluster.attach_connection(w, conn)
    else:  # both dialed at once: keep serving this link too
        conn.peer = pid
        cluster.serve_incoming(conn)


def _limit_blas_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        return
    threadpool_limits(1, "blas")


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
