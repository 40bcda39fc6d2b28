"""What one process asks of another: a call whose result comes back, an exit, a broadcast.

The user API (``remotecall`` and friends, pools, ``addprocs``) and the manager
interface build on these; they are the engine's whole vocabulary of requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ProcessExitedException
from ..links.connection import Connection, ConnectionClosed
from ..wire.framing import NO_REF
from ..wire.serialize import dumps_call
from . import cluster, directreply, peers
from .callrunner import internal
from .cluster import PGRP, Waiter, WorkerState
from .messages import MsgType


def fetch_call(pid: int, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``f(*args, **kwargs)`` on ``pid``, its value or its error; the caller reads the reply
    itself when it can (:mod:`clustercore.engine.directreply`)."""
    w = PGRP.workers.get(pid)
    conn = None if w is None else w.conn
    if conn is None or conn.closed or w.state is WorkerState.TERMINATED:  # type: ignore[union-attr]
        if pid == PGRP.myid:
            return call_fetch_async(pid, f, args, kwargs).result()
        conn = peers.connection_to(pid)
    call = (f, args, kwargs)
    wid = PGRP.next_waiter_id()
    outcome = directreply.request(conn, _CALL_FETCH, call, (PGRP.myid, wid), PGRP.runner, dumps_call)
    if outcome is None:
        return _send_with_waiter(conn, _CALL_FETCH, call, wid, None).result()
    if outcome[1]:
        raise outcome[0]
    return outcome[0]


_CALL_FETCH = int(MsgType.CALL_FETCH)


def send_call(
    pid: int, msg_type: int, call: tuple[Any, tuple[Any, ...], dict[str, Any]], response: Any = NO_REF
) -> None:
    """Send a call (CALL, REMOTE_DO) whose outcome stays on ``pid``."""
    conn = peers.connection_to(pid)
    try:
        cluster.send_frame_obj(conn, msg_type, call, response, NO_REF, 0, dumps_call)
    except ConnectionClosed as exc:
        raise peers.link_lost(conn, str(exc)) from None


def send_call_with_waiter(
    pid: int, msg_type: int, call: tuple[Any, tuple[Any, ...], dict[str, Any]], response: Any = None
) -> Waiter:
    """Send a call (CALL_FETCH; CALL_WAIT filling the Future ``response``) whose RESULT
    lands in the returned waiter."""
    return _send_with_waiter(peers.connection_to(pid), msg_type, call, PGRP.next_waiter_id(), response)


def _send_with_waiter(conn: Connection, msg_type: int, call: Any, wid: int, response: Any) -> Waiter:
    def send(payload: bytes, buffers: list[Any]) -> Waiter:
        return peers.send_pickled_with_waiter(conn, msg_type, payload, buffers, wid, response)

    return cluster.send_obj(conn, call, send, dumps_call)


def call_fetch_async(pid: int, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Waiter:
    """Start ``f(*args, **kwargs)`` on ``pid``; the returned waiter gets its result."""
    if pid == PGRP.myid:
        waiter = Waiter(pid)
        value, failed = PGRP.runner.run_work_thunk(f, args, kwargs, not getattr(f, "_clustercore_internal", False))
        waiter.set(value, failed)
        return waiter
    return send_call_with_waiter(pid, _CALL_FETCH, (f, args, kwargs))


@internal
def _exit_worker() -> None:
    cluster.exit_worker("asked to exit by pid 1")


def remote_exit(pid: int) -> None:
    """Ask worker ``pid`` to exit (the first rung of every ``kill``)."""
    try:
        send_call(pid, MsgType.REMOTE_DO, (_exit_worker, (), {}))
    except (ProcessExitedException, ValueError, OSError):
        pass


def broadcast_call(f: Callable[..., Any], pids: Iterable[int], *args: Any) -> list[Any]:
    """Call ``f`` on every pid at once and gather the replies as they arrive."""
    waiters = [call_fetch_async(p, f, args, {}) for p in pids]
    return [w.result() for w in waiters]


def broadcast_remote_do(f: Callable[..., Any], pids: Iterable[int], *args: Any) -> None:
    """``remote_do`` on every pid but those being removed (which need no news: an
    ``rmprocs`` of n workers would otherwise send n² messages)."""
    with PGRP.lock:
        leaving = {p for p, w in PGRP.workers.items() if w.state is WorkerState.TERMINATING}
    for pid in pids:
        if pid in leaving:
            continue
        try:
            send_call(pid, MsgType.REMOTE_DO, (f, args, {}))
        except (ProcessExitedException, ValueError):
            pass
