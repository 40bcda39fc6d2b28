"""This process's links to its peers: sending on them, dialing them (lazily, between
workers), serving them, and what happens when one ends.

The process group's state is :mod:`.cluster`; this module is where links to the
workers in it are made, used and dropped.
"""

from __future__ import annotations

import pickle
import socket
import threading
from typing import TYPE_CHECKING, Any

from ..errors import HandshakeError, ProcessExitedException
from ..links import establish
from ..links.connection import THREAD, Connection, ConnectionClosed
from ..links.dial import connect_to_worker
from ..logs import LazyLogger
from ..wire.framing import NO_REF
from ..wire.transport import make_transport
from . import cluster
from .cluster import (
    PGRP,
    Waiter,
    Worker,
    WorkerState,
    cluster_cookie,
    dumps_for,
    same_host,
    worker_from_id,
    worker_timeout,
)
from .message_handlers import handle_msg
from .messages import MsgType

if TYPE_CHECKING:
    from .launching import WorkerConfig
    from .managers import ClusterManager

log = LazyLogger(__name__)


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
    transport = None
    if w.local_address and PGRP.manager is None and same_host(w.local_address):
        sock = _dial_locally(w.local_address)
        if sock is not None:
            local = make_transport(sock)
            try:
                transport = establish.dial(local, cluster_cookie(), PGRP.tls, me=PGRP.myid, target=w.id)
            except HandshakeError as exc:
                log.warning("not using worker %d's Unix socket: %s", w.id, exc)
                local.close()
    if transport is None:
        manager = PGRP.manager  # a custom transport's (init_worker), else TCP
        if manager is None:
            host, port = w.connect_at
            transport = make_transport(connect_to_worker(host, port, worker_timeout()))
        else:
            from .launching import WorkerConfig  # loaded already: the manager's class needs it

            transport = make_transport(*manager.connect(w.id, WorkerConfig(connect_at=w.connect_at)))
        try:
            transport = establish.dial(transport, cluster_cookie(), PGRP.tls, me=PGRP.myid, target=w.id)
        except BaseException:
            transport.close()
            raise
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
        fail_waiters(conn)
        cluster.exit_worker("the driver (pid 1) closed its connection")
    else:
        deregister_worker(pid, conn.close_reason)


def deregister_worker(pid: int, reason: str = "") -> None:
    """Forget ``pid``: its waiters fail, pid 1 tells the others and its manager."""
    with PGRP.lock:
        w = PGRP.workers.get(pid)
        if w is None and PGRP.unread_peers:
            PGRP.exited[pid] = reason  # told of but not read yet: reading it must not bring it back
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
    cluster.tell_worker_left(w.id)
    if w.manager is not None and w.config is not None:
        manager, config = w.manager, w.config
        try:
            manager.manage(w.id, config, "deregister")
        except Exception:
            log.exception("manage(deregister) failed for worker %d", w.id)
        if not was_terminating:  # died by itself: make sure nothing is left behind
            threading.Thread(target=kill_quietly, args=(manager, w.id, config), daemon=True).start()


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


def kill_quietly(manager: ClusterManager, pid: int, config: WorkerConfig) -> None:
    try:
        manager.kill(pid, config)
        manager.manage(pid, config, "finalize")
    except Exception:
        log.debug("cleaning up worker %d failed", pid, exc_info=True)
