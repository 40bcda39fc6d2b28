"""The receive side: what a process does with each message (Julia's ``handle_msg``).

Runs on a link's reader thread. Payloads are unpickled here, in arrival
order (so reference counts carried by a message are applied before a later
GC frame); calls are then handed to the :class:`~clustercore.engine.callrunner.CallRunner`.
A payload that fails to unpickle gets an error reply for that call and the
link lives on: frames are length-prefixed, so the next one is intact.
"""

from __future__ import annotations

import itertools
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import CapturedException, RemoteException
from ..links.connection import Connection, ConnectionClosed
from ..logs import LazyLogger
from ..wire import serialize
from ..wire.framing import FLAG_ERROR, NO_REF, Frame
from . import cluster
from .callrunner import QUICK, QuickTask, frame_bytes
from .cluster import PGRP
from .messages import MsgType
from .refs import RRID, apply_gc_ops, lookup_ref

log = LazyLogger(__name__)
_CALLS = frozenset({MsgType.CALL, MsgType.CALL_WAIT, MsgType.REMOTE_DO})
_FILLS_FUTURE = frozenset({MsgType.CALL, MsgType.CALL_WAIT})
_CALL_FETCH, _RESULT = int(MsgType.CALL_FETCH), int(MsgType.RESULT)  # plain ints: read per message


def handle_msg(conn: Connection, frame: Frame) -> Callable[[], None] | None:
    """Handle one frame; a call is returned for the reading thread to run."""
    kind = frame.msg_type
    if kind == _CALL_FETCH:
        return _handle_call(conn, frame)
    if kind == _RESULT:
        _handle_result(conn, frame)
    elif kind in _CALLS:
        return _handle_call(conn, frame)
    elif kind == MsgType.GC:
        apply_gc_ops(pickle.loads(frame.payload))
    elif kind == MsgType.CALL_BATCH:
        return _handle_batch(conn, frame)
    elif kind == MsgType.DEFINE_FUNCTION:
        _define_function(conn, frame)
    elif kind == MsgType.INTERRUPT:
        PGRP.runner.interrupt()
    else:
        log.warning("ignoring a message of unexpected type %d from pid %s", kind, conn.peer)
    return None


def _handle_result(conn: Connection, frame: Frame) -> None:
    waiter = conn.waiters.pop(frame.response[1], None)
    if waiter is not None:
        waiter.set(*decode_result(conn, frame))


def decode_result(conn: Connection, frame: Frame) -> tuple[Any, bool]:
    """A RESULT frame's ``(value, failed)``; one that cannot be unpickled is that call's error."""
    try:
        return serialize.loads(frame.payload, frame.buffers, _held(conn)), bool(frame.flags & FLAG_ERROR)
    except BaseException as exc:  # noqa: BLE001
        return _capture(exc, f"the result from pid {conn.peer} could not be unpickled here", conn.peer), True


def _held(conn: Connection) -> serialize.CodeHeld:
    """The code ``conn``'s peer has given this process to hold (docs/protocol.md)."""
    tables = conn.code_tables
    return (tables or cluster.code_tables(conn)).held  # type: ignore[no-any-return]


def _handle_call(conn: Connection, frame: Frame) -> Callable[[], None] | None:
    kind = frame.msg_type
    rv = lookup_ref(RRID(*frame.response)) if kind in _FILLS_FUTURE else None
    try:
        f, args, kwargs = serialize.loads(frame.payload, frame.buffers, _held(conn))
    except BaseException as exc:  # noqa: BLE001 - answer this call, keep the link
        error = _capture(exc, "the call could not be unpickled on this worker", PGRP.myid)
        _finish(conn, kind, frame.response, frame.notify, rv, error, True)
        return None
    internal = getattr(f, "_clustercore_internal", False)
    interruptible = not internal
    runner = PGRP.runner
    run = runner.run_work_thunk
    response, notify = frame.response, frame.notify  # the frame's buffer is reused after we return
    if runner.trace is not None and interruptible:  # a trace() runs: record this call
        return _traced(conn, kind, response, notify, rv, f, (args, kwargs), frame_bytes(frame), 1)

    if kind == _CALL_FETCH:  # the hot path, flattened

        def fetch_job() -> None:
            send_result(conn, response, *run(f, args, kwargs, interruptible))

        return fetch_job if internal is not QUICK else QuickTask(fetch_job)

    def job() -> None:
        value, failed = run(f, args, kwargs, interruptible)
        _finish(conn, kind, response, notify, rv, value, failed)

    return job


_FUNCTIONS_PER_LINK = 64


def _define_function(conn: Connection, frame: Frame) -> None:
    """Keep a function for later CALL_BATCH messages on this link (the newest 64)."""
    functions = conn.functions
    try:
        fid, f = serialize.loads(frame.payload, frame.buffers, _held(conn))
    except BaseException as exc:  # noqa: BLE001 - every call that uses it will report this
        fid, f = frame.notify[1], _capture(exc, "the function could not be unpickled on this worker", PGRP.myid)
    functions[fid] = f
    while len(functions) > _FUNCTIONS_PER_LINK:
        del functions[next(iter(functions))]


def run_batch(f: Callable[..., Any], batch: list[Any], star: bool) -> tuple[list[Any], dict[int, RemoteException]]:
    """``f`` over ``batch``; each element's failure is caught apart from the others."""
    values: list[Any] = []
    errors: dict[int, RemoteException] = {}
    calls = itertools.starmap(f, batch) if star else map(f, batch)
    while True:
        try:
            values.extend(calls)  # keeps what came before a failure
            return values, errors
        except BaseException as exc:  # noqa: BLE001 - reported per element
            errors[len(values)] = RemoteException(PGRP.myid, CapturedException.capture(exc))
            values.append(None)


def _handle_batch(conn: Connection, frame: Frame) -> Callable[[], None] | None:
    response = frame.response
    star, fid = frame.notify
    f = conn.functions.get(fid)
    try:
        if f is None:
            raise LookupError(f"function {fid} was not defined on this link (or was evicted)")
        if isinstance(f, RemoteException):
            raise f
        batch = serialize.loads(frame.payload, frame.buffers, _held(conn))
    except BaseException as exc:  # noqa: BLE001
        error = exc if isinstance(exc, RemoteException) else _capture(exc, "the batch could not be run", PGRP.myid)
        send_result(conn, response, error, True)
        return None
    runner = PGRP.runner
    if runner.trace is not None:
        return _traced(conn, _CALL_BATCH, response, NO_REF, None, f, batch, frame_bytes(frame), len(batch), star)

    def job() -> None:
        value, failed = runner.run_work_thunk(run_batch, (f, batch, bool(star)), {})
        send_result(conn, response, value, failed)

    return job


_CALL_BATCH = int(MsgType.CALL_BATCH)


def _traced(
    conn: Connection,
    kind: int,
    response: tuple[int, int],
    notify: tuple[int, int],
    rv: Any,
    f: Any,
    work: Any,
    nbytes: int,
    elements: int,
    star: int = 0,
) -> Callable[[], None]:
    """A call (``work`` = (args, kwargs)) or batch (``work`` = its elements) that appends
    ``(function, elements, bytes in, start, end, failed)`` to the runner's trace before
    its result is sent (after, the caller may already have ended the trace and taken the
    records); only while a ``trace()`` runs."""
    runner = PGRP.runner
    trace = runner.trace

    def traced_job() -> None:
        start = time.time()
        if kind == _CALL_BATCH:
            value, failed = runner.run_work_thunk(run_batch, (f, work, bool(star)), {})
            if trace is not None:
                trace.append((f, elements, nbytes, start, time.time(), failed or bool(value[1])))
            send_result(conn, response, value, failed)
        else:
            value, failed = runner.run_work_thunk(f, *work)
            if trace is not None:
                trace.append((f, elements, nbytes, start, time.time(), failed))
            _finish(conn, kind, response, notify, rv, value, failed)

    return traced_job


def _finish(
    conn: Connection,
    kind: int,
    response: tuple[int, int],
    notify: tuple[int, int],
    rv: Any,
    value: Any,
    failed: bool,
) -> None:
    if kind == MsgType.CALL:
        rv.store.set(value, failed)
    elif kind == MsgType.CALL_FETCH:
        send_result(conn, response, value, failed)
    elif kind == MsgType.CALL_WAIT:
        rv.store.set(value, failed)
        send_result(conn, notify, value if failed else None, failed)
    elif failed:  # REMOTE_DO: nobody waits, so the error goes to this worker's stderr
        print(f"Error in remote_do on worker {PGRP.myid}:\n{value.captured.traceback}", file=sys.stderr, flush=True)


_ATOMS = frozenset({type(None), bool, int, float})


def send_result(conn: Connection, response: tuple[int, int], value: Any, failed: bool) -> None:
    """Reply to a waiter; a value that cannot be pickled becomes a RemoteException."""
    try:
        if type(value) in _ATOMS:
            conn.send_frame(_RESULT, pickle.dumps(value, protocol=5), [], response, NO_REF, FLAG_ERROR if failed else 0)
            return
        try:
            _send_value(conn, response, value, failed)
        except ConnectionClosed:
            raise
        except BaseException as exc:  # noqa: BLE001 - it would not pickle
            what = "exception" if failed else "result"
            value = _capture(exc, f"the {what} of type {type(value).__name__} could not be pickled", PGRP.myid)
            try:
                _send_value(conn, response, value, True)
            except ConnectionClosed:
                raise
            except BaseException:  # noqa: BLE001 - the original exception itself will not pickle
                value = RemoteException(PGRP.myid, CapturedException(RuntimeError(str(exc)), value.captured.traceback))
                _send_value(conn, response, value, True)
    except ConnectionClosed:
        log.debug("pid %s left before its result was sent", conn.peer)


def _send_value(conn: Connection, response: tuple[int, int], value: Any, failed: bool) -> None:
    cluster.send_frame_obj(conn, _RESULT, value, response, NO_REF, FLAG_ERROR if failed else 0)


def _capture(exc: BaseException, context: str, pid: int) -> RemoteException:
    captured = CapturedException.capture(exc)
    captured.traceback = f"{context}:\n{captured.traceback}"
    return RemoteException(pid, captured)
