"""One authenticated link to a peer: framed sends, and what waits on it.

Sending: a sender writes what the socket takes at once and queues the rest for
the link's writer thread; no other thread waits for a socket (see "the writer"
below). Reading a link is a right held by one thread at a time (``read_lock``). On
the driver a link can also be *polled*: its reader then waits in ``epoll``
(one-shot) without holding that right, so a caller that wants a reply can
take the right, read the reply itself and give the right back, and the
reader never wakes (see :mod:`clustercore.engine.directreply`).
"""

from __future__ import annotations

import functools
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..sigint import call_holding_sigint
from ..wire import memfd
from ..wire.framing import HEADER, NO_REF, Frame, FrameReader, encode_frame, encode_frame_with_memfds
from ..wire.transport import Transport, UnixTransport, byte_views, skip


class ConnectionClosed(ConnectionError):
    """The link is gone; sends fail and waiters are released with an error."""


class Connection:
    """Frames over a transport; ``peer`` is the remote pid once known."""

    def __init__(self, transport: Transport, peer: int = 0) -> None:
        self.transport = transport
        self.peer = peer
        self.closed = False
        self.close_reason = ""
        self._reader = reader = FrameReader(transport)
        # Bound straight to the reader: these run for every frame.
        self.read_frame: Callable[[], Frame | None] = reader.read_frame  # hold ``read_lock``; None at clean EOF
        self.has_buffered_frame: Callable[[], bool] = reader.has_frame  # reading one will not block
        self.has_buffered_bytes: Callable[[], bool] = reader.has_bytes  # a frame, or the start of one
        # Buffer what has arrived without waiting; whether a frame is whole (polled links only).
        self.receive_available: Callable[[], bool] = _blocking_link
        self._send_lock = threading.Lock()
        self._writing = False  # a thread holds the writer role: others queue behind it
        self._queue: list[list[Any]] = []  # frames (lists of parts) the writer still owes
        self._queued = 0  # frames ever queued; a waiting sender's ticket is its frame's number
        self._written = 0  # how many queued frames are written
        self._ticket_locks: list[tuple[int, threading.Lock]] = []  # senders waiting, oldest first
        self._before_send: Callable[[], list[Any]] | None = None
        self._outbox: list[Any] = []
        self.corked_by = 0  # a thread whose sends wait in _pending until it uncorks
        self._pending: list[Any] = []
        self.waiters: dict[int, Any] = {}  # RESULT targets by waiter id: objects with .set(value, failed)
        self.functions: dict[int, Any] = {}  # CALL_BATCH functions by id, newest last
        self.code_tables: Any = None  # the code each end holds for the other (wire.serialize.CodeTables)
        self.read_lock = threading.Lock()  # the right to read frames
        self.read_epoch = 0  # times a caller has held that right (the reader's wake may be stale)
        self.poller: select.epoll | None = None
        self._fd = -1
        # Large buffers go as memfds: an authenticated Unix socket (same host, same user).
        self.passes_memfds = memfd.SENDS and isinstance(transport, UnixTransport) and transport.fds_accepted
        self.bytes_received = 0  # of the frames read: added to by the thread holding read_lock

    def enable_polling(self) -> bool:
        """Let callers read replies themselves (a socket on Linux); False if it cannot."""
        fileno = getattr(getattr(self.transport, "sock", None), "fileno", None)
        if fileno is None or not hasattr(select, "epoll") or self.poller is not None:
            return self.poller is not None
        self._fd = fileno()
        self.poller = select.epoll()
        self.poller.register(self._fd, _ARMED)
        self.receive_available = functools.partial(self._reader.receive_available, int(socket.MSG_DONTWAIT))
        return True

    def wait_readable(self) -> bool:
        """Block until data arrives (when armed; True) or this link closes (False)."""
        assert self.poller is not None
        try:
            return any(fd == self._fd for fd, _ in self.poller.poll())
        except (OSError, ValueError):  # the poller was closed under us
            self.mark_closed("closed locally")
            return False

    def arm(self) -> None:
        """Wake the waiting reader when data arrives. A caller arms after giving back
        ``read_lock`` (the reader may take the wake-up only when it can also take the
        right); the reader itself, which alone waits, arms before."""
        try:
            self.poller.modify(self._fd, _ARMED)  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass  # closed: the close itself wakes the reader

    def disarm(self) -> None:
        """Keep the waiting reader asleep while this thread reads."""
        try:
            self.poller.modify(self._fd, _DISARMED)  # type: ignore[union-attr]
        except (OSError, ValueError):
            pass

    def set_before_send(self, fn: Callable[[], list[Any]], pending: list[Any]) -> None:
        """``fn`` returns frames to send ahead of the next message (GC batches) while
        ``pending`` (a list the owner of ``fn`` fills and empties in place) is non-empty."""
        self._before_send = fn
        self._outbox = pending

    def send_frame(
        self,
        msg_type: int,
        payload: Any,
        buffers: list[Any] = (),  # type: ignore[assignment]
        response: tuple[int, int] = NO_REF,
        notify: tuple[int, int] = NO_REF,
        flags: int = 0,
    ) -> None:
        """Send one frame, whole and in order (see "the writer" below for who waits)."""
        parts: list[Any] | _Encode
        if buffers:
            if self.passes_memfds:  # made where no interrupt can leave a memfd without an owner
                parts = _Encode(
                    encode_frame_with_memfds, self.transport, msg_type, payload, buffers, response, notify, flags
                )
            else:
                parts = encode_frame(msg_type, payload, buffers, response, notify, flags)
        else:
            parts = [_pack_header(len(payload), msg_type, flags, 0, *response, *notify), payload]
        self._send(parts)

    def cork(self) -> None:
        """Hold this thread's sends until :meth:`uncork`, to write them in one system call."""
        self.corked_by = threading.get_ident()

    def uncork(self) -> None:
        """Send whatever is held, now."""
        self._send(_UNCORK)

    def corked_by_me(self) -> bool:
        return self.corked_by == threading.get_ident()

    def flush(self) -> None:
        """Send what ``before_send`` has pending, with no message after it."""
        self._send(_FLUSH)

    # --- the writer ------------------------------------------------------------------------
    # Both ends of a link may write at once; if each waited for its socket while nobody on
    # its side read, both would wait forever. So no thread but a link's writer ever waits
    # for a socket: a sender writes what the socket takes at once and queues the rest for
    # the writer thread (started when needed, gone when the queue is empty), whose only
    # job is to write. A thread that serves links (a reader, a caller reading its own
    # reply, the watchdog) then goes on; any other thread waits until its frame is
    # written, since its buffers may be reused once the send returns.

    def _send(self, parts: list[Any] | _Encode) -> None:
        """Hand ``parts`` to the socket or the writer, where no interrupt can cut them in
        two, then wait until they are written if this thread must."""
        user_call = THREAD.user_call
        if user_call is not None:  # a served call: interrupts wait (CallRunner.interrupts_held)
            with user_call.interrupts_held():
                ticket = self._submit(parts, in_user_call=True)
        elif THREAD.sigint_held or threading.get_ident() != _MAIN_IDENT:
            ticket = self._submit(parts)
        else:  # the main thread: Ctrl-C waits until the frame is handed over
            ticket = call_holding_sigint(self._submit, parts)
        if ticket:
            self._wait_written(ticket)

    def _wait_written(self, ticket: int) -> None:
        """Wait until queued frame number ``ticket`` is written, or the link is closed. On a
        plain lock, not a Condition: Ctrl-C can end the wait without breaking a lock's state."""
        with self._send_lock:
            if self._written >= ticket or self.closed:
                done = None
            else:
                done = threading.Lock()
                done.acquire()
                self._ticket_locks.append((ticket, done))
        if done is not None:
            done.acquire()  # released by the writer, or by the close
        if self._written < ticket:
            raise ConnectionClosed(self.close_reason or "connection closed")

    def _release_tickets(self) -> None:
        """Wake the senders whose frames are written (all of them once closed); holds ``_send_lock``."""
        locks = self._ticket_locks
        while locks and (self.closed or locks[0][0] <= self._written):
            locks.pop(0)[1].release()

    def _submit(self, frame: list[Any] | _Encode, in_user_call: bool = False) -> int:
        """Write what the socket takes now, queue the rest for the writer thread; the ticket
        this thread must wait for (0: none, its frame is written or it must not wait)."""
        # Large buffers into memfds: before the lock, so others send meanwhile.
        parts: list[Any] = frame() if type(frame) is _Encode else frame  # type: ignore[assignment]
        with self._send_lock:
            if parts is _UNCORK:
                self.corked_by = 0
                parts, self._pending = self._pending, []
                if self.closed:
                    return 0
            elif parts is _FLUSH:
                parts = self._before_send() if self._before_send is not None and not self.closed else []
                if self._pending:
                    parts, self._pending = self._pending + parts, []
            else:
                if self.closed:
                    raise ConnectionClosed(self.close_reason or "connection closed")
                if self._outbox:
                    parts = self._before_send() + parts  # type: ignore[misc]
                # A reader corks to answer several calls in one write; a call it runs sends at
                # once (its buffers are the caller's again when the send returns).
                if self.corked_by and self.corked_by == threading.get_ident() and not in_user_call:
                    self._pending += parts
                    return 0
                if self._pending:
                    parts, self._pending = self._pending + parts, []
            if not parts:
                return 0
            if not self._writing:
                try:
                    parts = self.transport.send_nowait(parts)  # what the socket did not take
                except OSError as exc:
                    self._close_locked(f"send failed: {exc}")
                    raise ConnectionClosed(self.close_reason) from exc
                if not parts:
                    return 0
                self._start_writer()  # it takes the queue once this thread lets go of the lock
            self._queue.append(parts)
            self._queued += 1
            return 0 if THREAD.serves_links else self._queued

    def _start_writer(self) -> None:
        """Start the writer thread for what is queued; holds ``_send_lock``."""
        self._writing = True
        try:
            threading.Thread(target=self._drain, name=f"clustercore-writer-{self.peer}", daemon=True).start()
        except BaseException as exc:  # no thread (a limit) or an interrupt: the queue has no writer
            self._writing = False
            self._close_locked(f"could not start the link's writer thread: {exc!r}")
            raise ConnectionClosed(self.close_reason) from exc

    def _drain(self) -> None:
        """The writer thread: write queued frames until none is left, then end."""
        while True:
            with self._send_lock:
                if self.closed or not self._queue:
                    self._writing = False
                    self._queue.clear()
                    self._release_tickets()
                    return
                batch, self._queue = self._queue, []
                written = self._written + len(batch)
            views = [view for parts in batch for view in byte_views(parts)]
            try:
                while views:
                    views = skip(views, self.transport.send_some(views))
            except BaseException as exc:  # noqa: BLE001 - any failure ends the link, not just the thread
                self.close(f"send failed: {exc!r}")
                continue
            with self._send_lock:
                self._written = written
                self._release_tickets()

    def close_poller(self) -> None:
        if self.poller is not None:
            self.poller.close()

    def mark_closed(self, reason: str) -> None:
        """Record that the link is over (its reader found so); waiting senders give up."""
        with self._send_lock:
            self._close_locked(reason)

    def _close_locked(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
        self._release_tickets()  # senders waiting for the writer give up

    def close(self, reason: str = "closed locally") -> None:
        self.mark_closed(reason)
        try:
            self.transport.close()
        except OSError:
            pass
        if self.poller is not None:
            try:  # wake this link's reader, whatever its arming: an always-readable fd joins its poller
                self.poller.register(_always_readable_fd(), select.EPOLLIN)
            except (OSError, ValueError):
                pass  # the reader is gone already


class _ThreadRole(threading.local):
    """What the current thread is to the engine."""

    serves_links = False  # reads links or keeps them moving: it must never wait for a peer
    user_call: Any = None  # the CallRunner, while this thread runs a call it may interrupt
    sigint_held = False  # Ctrl-C cannot reach engine code here (held, or raised only in calls)


THREAD = _ThreadRole()
_MAIN_IDENT = threading.main_thread().ident


class _Encode(functools.partial):  # type: ignore[type-arg]
    """A frame to encode in ``_submit``, where interrupts are held."""


_UNCORK: list[Any] = []  # markers for _submit: what to send is taken under the lock
_FLUSH: list[Any] = []


def _blocking_link() -> bool:
    raise NotImplementedError("only a polled link reads without waiting")


_pack_header = HEADER.pack
_ARMED = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, "epoll") else 0
_DISARMED = select.EPOLLONESHOT if hasattr(select, "epoll") else 0
_always_readable: list[int] = []
_always_readable_lock = threading.Lock()


def _always_readable_fd() -> int:
    """An eventfd that is never read, so always readable: added to a closing link's poller,
    it wakes that link's reader (and no other)."""
    if not _always_readable:
        with _always_readable_lock:
            if not _always_readable:
                _always_readable.append(os.eventfd(1, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    return _always_readable[0]
