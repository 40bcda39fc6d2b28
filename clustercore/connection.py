"""One authenticated link to a peer: framed sends under a lock, and what waits on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .wire.framing import NO_REF, Frame, FrameReader, encode_frame
from .wire.transport import Transport


class ConnectionClosed(ConnectionError):
    """The link is gone; sends fail and waiters are released with an error."""


class Connection:
    """Frames over a transport; ``peer`` is the remote pid once known."""

    def __init__(self, transport: Transport, peer: int = 0) -> None:
        self.transport = transport
        self.peer = peer
        self.closed = False
        self.close_reason = ""
        self._reader = FrameReader(transport)
        self._send_lock = threading.Lock()
        self._before_send: Callable[[], list[Any]] | None = None
        self._corked_by = 0  # a thread whose sends wait in _pending until it uncorks
        self._pending: list[Any] = []
        self.waiters: dict[int, Any] = {}  # RESULT targets by waiter id: objects with .set(value, failed)
        self.functions: dict[int, Any] = {}  # CALL_BATCH functions by id, newest last

    def set_before_send(self, fn: Callable[[], list[Any]]) -> None:
        """``fn`` returns frames to send ahead of the next message (GC batches)."""
        self._before_send = fn

    def send_frame(
        self,
        msg_type: int,
        payload: Any,
        buffers: list[Any] = (),  # type: ignore[assignment]
        response: tuple[int, int] = NO_REF,
        notify: tuple[int, int] = NO_REF,
        flags: int = 0,
    ) -> None:
        parts = encode_frame(msg_type, payload, buffers, response, notify, flags)
        with self._send_lock:
            if self.closed:
                raise ConnectionClosed(self.close_reason or "connection closed")
            if self._before_send is not None:
                parts = self._before_send() + parts
            if self._corked_by == threading.get_ident():
                self._pending += parts
                return
            if self._pending:
                parts, self._pending = self._pending + parts, []
            self._send_parts(parts)

    def _send_parts(self, parts: list[Any]) -> None:
        try:
            self.transport.send_all(parts)
        except OSError as exc:
            self._mark_closed(f"send failed: {exc}")
            raise ConnectionClosed(self.close_reason) from exc

    def cork(self) -> None:
        """Hold this thread's sends until :meth:`uncork`, to write them in one system call."""
        self._corked_by = threading.get_ident()

    def uncork(self) -> None:
        """Send whatever is held, now."""
        with self._send_lock:
            self._corked_by = 0
            parts, self._pending = self._pending, []
            if parts and not self.closed:
                self._send_parts(parts)

    def corked_by_me(self) -> bool:
        return self._corked_by == threading.get_ident()

    def has_buffered_frame(self) -> bool:
        """Whether a whole frame has already been received (reading it will not block)."""
        return self._reader.has_frame()

    def flush(self) -> None:
        """Send what ``before_send`` has pending, with no message after it."""
        with self._send_lock:
            parts = self._before_send() if self._before_send is not None and not self.closed else []
            if self._pending:
                parts, self._pending = self._pending + parts, []
            if parts:
                self._send_parts(parts)

    def read_frame(self) -> Frame | None:
        return self._reader.read_frame()

    def _mark_closed(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason

    def close(self, reason: str = "closed locally") -> None:
        self._mark_closed(reason)
        try:
            self.transport.close()
        except OSError:
            pass
