"""A caller that reads its own reply: a round trip that wakes no other thread.

On the driver each link's reader waits in ``epoll`` rather than in ``recv``
(:class:`~clustercore.connection.Connection`). A thread that sends a request
and wants its reply takes the link's read right, stops the reader's poller
from firing, sends, reads frames until its reply is there, handles any other
frame it reads on the way exactly as the reader would (results to their
waiters, calls to the :class:`~clustercore.callrunner.CallRunner`), re-arms
the poller and lets go. When the right is taken, or the thread runs a
served call (which ``interrupt`` may target), it waits for a reader to hand
it the reply instead.

On the main thread ``SIGINT`` is held back while the caller holds the read
right, except while it waits for data (a peek that takes nothing), and is
delivered as soon as it may be: Ctrl-C never leaves half a frame behind or
the read right taken.
"""

from __future__ import annotations

import _signal
import pickle
import signal
import socket
import threading
from typing import Any, NoReturn

from .connection import Connection, ConnectionClosed
from .errors import ProcessExitedException
from .message_handlers import decode_result, handle_msg
from .messages import MsgType

_MAIN_IDENT = threading.main_thread().ident
_RESULT = MsgType.RESULT
_held_signals: list[int] = []
_peek_buffer = bytearray(1)


def _hold(signum: int, frame: Any) -> None:
    _held_signals.append(signum)


def request(
    conn: Connection, msg_type: int, payload: bytes, buffers: list[Any], ref: tuple[int, int], runner: Any
) -> tuple[Any, bool] | None:
    """Send a request answered by RESULT ``ref`` on ``conn``; its ``(value, failed)``.

    Returns ``None``, having sent nothing, when this thread cannot read the
    link now: the caller then waits for a reader to hand it the reply.
    """
    me = threading.get_ident()
    if conn.poller is None or me in runner.in_user_code:
        return None
    if me == _MAIN_IDENT:
        handler = _signal.getsignal(signal.SIGINT)
        if callable(handler):
            return _request_holding_sigint(conn, msg_type, payload, buffers, ref, runner, handler)
    return _request(conn, msg_type, payload, buffers, ref, runner, None)


def _request_holding_sigint(
    conn: Connection,
    msg_type: int,
    payload: bytes,
    buffers: list[Any],
    ref: tuple[int, int],
    runner: Any,
    handler: Any,
) -> tuple[Any, bool] | None:
    """:func:`_request` on the main thread: ``SIGINT`` is held back except while waiting for data,
    so it never lands between taking the read right and giving it back, or inside a frame."""
    peek = conn.transport.sock.recv_into  # type: ignore[attr-defined]

    def wait_for_data() -> None:
        _signal.signal(signal.SIGINT, handler)
        try:
            if _held_signals:  # one came while we were busy: deliver it instead of waiting
                _held_signals.clear()
                handler(signal.SIGINT, None)
            peek(_peek_buffer, 1, socket.MSG_PEEK)  # takes nothing: an interrupt here loses nothing
        except OSError:
            pass  # the read that follows reports it
        finally:
            _signal.signal(signal.SIGINT, _hold)

    _signal.signal(signal.SIGINT, _hold)
    try:
        return _request(conn, msg_type, payload, buffers, ref, runner, wait_for_data)
    finally:
        _signal.signal(signal.SIGINT, handler)
        if _held_signals:
            _held_signals.clear()
            handler(signal.SIGINT, None)


def _request(
    conn: Connection,
    msg_type: int,
    payload: bytes,
    buffers: list[Any],
    ref: tuple[int, int],
    runner: Any,
    wait_for_data: Any,
) -> tuple[Any, bool] | None:
    lock = conn.read_lock
    if not lock.acquire(blocking=False):
        return None
    try:
        conn.read_epoch += 1
        conn.disarm()
        try:
            conn.send_frame(msg_type, payload, buffers, response=ref)
        except ConnectionClosed as exc:
            raise ProcessExitedException(conn.peer, str(exc)) from None
        return _read_reply(conn, ref[1], runner, wait_for_data)
    finally:
        conn.arm()
        lock.release()


def _read_reply(conn: Connection, wid: int, runner: Any, wait_for_data: Any) -> tuple[Any, bool]:
    read_frame = conn.read_frame
    while True:
        if wait_for_data is not None and not conn.has_buffered_frame():
            wait_for_data()
        try:
            frame = read_frame()
        except (OSError, EOFError) as exc:
            _lost(conn, f"{type(exc).__name__}: {exc}")
        if frame is None:
            _lost(conn, "closed by peer")
        if frame.msg_type == _RESULT and frame.response[1] == wid:
            if frame.flags or frame.buffers or conn.has_buffered_bytes():
                return _take_reply(conn, frame, runner)
            try:
                return pickle.loads(frame.payload), False
            except BaseException:  # noqa: BLE001 - decode_result reports it
                return decode_result(conn, frame)
        _dispatch(conn, frame, runner)


def _take_reply(conn: Connection, frame: Any, runner: Any) -> tuple[Any, bool]:
    outcome = decode_result(conn, frame)
    while conn.has_buffered_frame():  # what came with it: no reader would be woken for it
        _dispatch(conn, _read(conn), runner)
    return outcome


def _read(conn: Connection) -> Any:
    try:
        frame = conn.read_frame()
    except (OSError, EOFError) as exc:
        _lost(conn, f"{type(exc).__name__}: {exc}")
    if frame is None:
        _lost(conn, "closed by peer")
    return frame


def _lost(conn: Connection, reason: str) -> NoReturn:
    """The link died under this reader: close it (its reader then cleans up) and say so."""
    conn.close(reason)
    raise ProcessExitedException(conn.peer, reason)


def _dispatch(conn: Connection, frame: Any, runner: Any) -> None:
    call = handle_msg(conn, frame)
    if call is not None:
        runner.spawn(call)
