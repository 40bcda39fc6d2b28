"""What one process asks of another: a call whose result comes back, an exit, a broadcast.

The user API (``remotecall`` and friends, pools, ``addprocs``, ``status()``,
``trace()``) and the manager interface build on these; they are the engine's whole
vocabulary of requests. :func:`broadcast_call` is the one way to ask many processes
at once: it waits for every reply, or (``timeout``) for what has come by a deadline.
"""

from __future__ import annotations

import threading
import time
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


def broadcast_call(
    f: Callable[..., Any], pids: Iterable[int], *args: Any, timeout: float | None = None, merge: bool = False
) -> dict[int, Any]:
    """``f(*args)`` on every pid at once; the values by pid, gathered as they arrive.

    Without ``timeout``, every reply is waited for and the first failure (a pid that
    raised, or is gone) is raised. With ``timeout`` (seconds), nothing is waited for past
    that deadline and nothing is raised: a pid that has not answered by then, failed, is
    gone or (on a worker) has no open link is ``None``; dialing it could take longer than
    the whole deadline. ``merge`` (with ``timeout``; a ``ValueError`` without): a pid whose
    earlier request of the same ``f(*args)`` (the same function object, equal arguments) is
    still unanswered is not asked again, that request is waited for, so a stuck process
    costs one pending request however often it is asked; for requests that only read
    (``status``), never for one that changes something (starting a trace). Arguments that
    cannot be hashed are never merged.
    """
    targets = list(pids)
    if merge and timeout is None:
        raise ValueError("merge=True needs a timeout: only a request with a deadline is merged")
    if timeout is None:
        waiters = [call_fetch_async(p, f, args, {}) for p in targets]
        return {p: w.result() for p, w in zip(targets, waiters, strict=True)}
    deadline = time.monotonic() + timeout
    asked = {p: _ask_within(p, f, args, merge) for p in targets}
    out: dict[int, Any] = {}
    for pid, waiter in asked.items():
        answered = waiter is not None and waiter.wait(max(0.0, deadline - time.monotonic())) and not waiter.failed
        out[pid] = waiter.value if answered and waiter is not None else None
    return out


_PendingKey = tuple[int, Callable[..., Any], tuple[Any, ...]]
_pending: dict[_PendingKey, Waiter] = {}  # merged requests not answered yet, by (pid, f, args)
_pending_lock = threading.Lock()


def _ask_within(pid: int, f: Callable[..., Any], args: tuple[Any, ...], merge: bool) -> Waiter | None:
    """Start ``f(*args)`` on ``pid`` for a broadcast with a deadline: its waiter (an earlier
    one still pending, with ``merge``), or ``None`` if it cannot be asked at once."""
    key: _PendingKey | None = None
    if merge:  # keyed on the function object itself: two functions never share an answer
        try:
            hash(key := (pid, f, args))
        except TypeError:
            key = None  # arguments that cannot be hashed: asked afresh each time
    if key is not None:
        with _pending_lock:
            waiter = _pending.get(key)
        if waiter is not None and not waiter.done:
            return waiter
    if pid != PGRP.myid and PGRP.myid != 1:
        w = PGRP.workers.get(pid)
        if w is None or w.conn is None or w.conn.closed:
            return None
    try:
        waiter = call_fetch_async(pid, f, args, {})
    except Exception:  # noqa: BLE001 - gone, or not reachable: no answer
        return None
    if key is not None and not waiter.done:
        pending = key
        with _pending_lock:
            _pending[pending] = waiter
        waiter.add_done_callback(lambda w: _forget(pending, w))  # at once if answered already: not under the lock
    return waiter


def _forget(key: _PendingKey, waiter: Waiter) -> None:
    with _pending_lock:
        if _pending.get(key) is waiter:
            del _pending[key]


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
