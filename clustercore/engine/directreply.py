"""A caller that reads its own reply: a round trip that wakes no other thread.

On the driver each link's reader waits in ``epoll`` rather than in ``recv``
(:class:`~clustercore.links.connection.Connection`). A thread that sends a request
and wants its reply takes the link's read right, stops the reader's poller
from firing, sends, reads frames until its reply is there, handles any other
frame it reads on the way exactly as the reader would (results to their
waiters, calls to the :class:`~clustercore.engine.callrunner.CallRunner`), lets go
and re-arms the poller. When the right is taken, or the thread runs a
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

from ..links.connection import THREAD, Connection, ConnectionClosed
from ..wire.framing import HEADER, NO_REF
from .callrunner import frame_bytes
from .cluster import send_frame_obj
from .message_handlers import decode_result, handle_msg
from .messages import MsgType
from .peers import link_lost

_MAIN_IDENT = threading.main_thread().ident
_RESULT = MsgType.RESULT
_peek_buffer = bytearray(1)
_HEADER_SIZE = HEADER.size


def request(
    conn: Connection, msg_type: int, obj: Any, ref: tuple[int, int], runner: Any, dumps: Any
) -> tuple[Any, bool] | None:
    """Send ``obj`` (pickled by ``dumps``, see :func:`~clustercore.engine.cluster.send_obj`)
    as a request answered by RESULT ``ref`` on ``conn``; its ``(value, failed)``.

    Returns ``None``, having sent nothing, when this thread cannot read the
    link now: the caller then waits for a reader to hand it the reply.
    """
    me = threading.get_ident()
    if conn.poller is None or me in runner.in_user_code:
        return None
    handler = _signal.getsignal(signal.SIGINT) if me == _MAIN_IDENT else None
    holding_sigint = callable(handler)
    if holding_sigint:
        _sigint.handler = handler
        _signal.signal(signal.SIGINT, _hold)
        held_before, THREAD.sigint_held = THREAD.sigint_held, True  # the send needs no hold of its own
    try:
        lock = conn.read_lock
        if not lock.acquire(blocking=False):
            return None
        THREAD.serves_links = True  # holding the read right: no send may wait for the peer
        try:
            conn.read_epoch += 1
            conn.disarm()
            try:
                send_frame_obj(conn, msg_type, obj, ref, NO_REF, 0, dumps)
            except ConnectionClosed as exc:
                raise link_lost(conn, str(exc)) from None
            return _read_reply(conn, ref[1], runner, holding_sigint)
        finally:
            THREAD.serves_links = False
            # Let go first, then re-arm: armed while still holding the right, the
            # reader could take the wake-up, fail to get the right, and sleep on a
            # poller nobody re-arms, with data waiting.
            lock.release()
            conn.arm()
    finally:
        if holding_sigint:
            THREAD.sigint_held = held_before
            _signal.signal(signal.SIGINT, handler)
            if _sigint.held:
                _sigint.held = False
                handler(signal.SIGINT, None)  # type: ignore[misc]


class _SigintState:
    """The main thread's SIGINT while it holds a link's read right (see :func:`_hold`)."""

    handler: Any = None  # the handler to deliver to
    waiting = False  # in the peek that waits for data: deliver at once
    held = False  # one arrived while it could not be delivered


_sigint = _SigintState()


def _hold(signum: int, frame: Any) -> None:
    """SIGINT handler while the read right is held: deliver it only while no byte of a
    frame has been taken (the peek), else keep it until the right is given back."""
    if _sigint.waiting:
        _sigint.handler(signum, frame)
    else:
        _sigint.held = True


def _read_reply(conn: Connection, wid: int, runner: Any, holding_sigint: bool) -> tuple[Any, bool]:
    read_frame = conn.read_frame
    while True:
        if holding_sigint and not conn.has_buffered_frame():
            _wait_for_data(conn)  # a peek: returns at once if the reply is there, and takes nothing
        try:
            frame = read_frame()
        except (OSError, EOFError) as exc:
            _lost(conn, f"{type(exc).__name__}: {exc}")
        if frame is None:
            _lost(conn, "closed by peer")
        conn.bytes_received += _HEADER_SIZE + frame.payload.nbytes if not frame.buffers else frame_bytes(frame)
        if frame.msg_type == _RESULT and frame.response[1] == wid:
            if frame.flags or frame.buffers or conn.has_buffered_bytes():
                return _take_reply(conn, frame, runner)
            try:
                return pickle.loads(frame.payload), False
            except BaseException:  # noqa: BLE001 - decode_result reports it
                return decode_result(conn, frame)
        _dispatch(conn, frame, runner)


def _wait_for_data(conn: Connection) -> None:
    """Block until a byte can be read, taking none: SIGINT is delivered meanwhile."""
    _sigint.waiting = True
    try:
        if _sigint.held:  # one came while we were busy: deliver it rather than wait
            _sigint.held = False
            _sigint.handler(signal.SIGINT, None)
        conn.transport.sock.recv_into(_peek_buffer, 1, socket.MSG_PEEK)  # type: ignore[attr-defined]
    except OSError:
        pass  # the read that follows reports it
    finally:
        _sigint.waiting = False


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
    conn.bytes_received += frame_bytes(frame)
    return frame


def _lost(conn: Connection, reason: str) -> NoReturn:
    """The link died under this caller: close it, forget the worker, and say so.

    The worker is forgotten here rather than left to the link's reader, so that
    the caller's ``ProcessExitedException`` never races ahead of ``workers()``.
    """
    conn.close(reason)
    raise link_lost(conn, reason)


def _dispatch(conn: Connection, frame: Any, runner: Any) -> None:
    call = handle_msg(conn, frame)
    if call is not None:
        runner.spawn(call)
