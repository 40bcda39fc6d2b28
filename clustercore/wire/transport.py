"""Byte transports under the framing layer: a socket, or a pair of streams.

A custom cluster manager's ``connect`` hook may return any
``(instream, outstream)`` pair; :func:`make_transport` wraps it.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import threading
from typing import Any, Protocol

IOV_MAX = 1024  # Linux's cap on the buffers of one sendmsg call


class Transport(Protocol):
    """What the framing layer needs from a connection."""

    def recv_into(self, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes into ``view``; 0 means end of stream."""

    def send_all(self, parts: list[Any]) -> None:
        """Write every byte of every buffer in ``parts``, in order."""

    def send_nowait(self, parts: list[Any]) -> list[memoryview]:
        """Write what can be written without waiting; what is left, as byte views."""

    def send_some(self, views: list[memoryview]) -> int:
        """Write at least one byte of ``views``, waiting if need be; how many were written."""

    def close(self) -> None:
        """Close both directions; a blocked ``recv_into`` returns or raises."""

    def set_timeout(self, seconds: float | None) -> None:
        """Bound each blocking read and write (``None``: no bound)."""

    def describe(self) -> str:
        """A short text naming the peer, for error messages."""


def byte_views(parts: list[Any]) -> list[memoryview]:
    views: list[Any] = []
    for part in parts:
        if type(part) is FdGroup:  # stays in place: its fds go with the bytes after it
            views.append(part)
            continue
        view = memoryview(part)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if view.nbytes:
            views.append(view)
    return views


def _copy_chunk(chunk: bytes, view: memoryview) -> int:
    view[: len(chunk)] = chunk
    return len(chunk)


def _total(parts: list[Any]) -> int:
    total = 0
    for part in parts:
        total += len(part) if type(part) is bytes else memoryview(part).nbytes
    return total


_NOTHING_LEFT: list[memoryview] = []  # never mutated: callers only test it and slice it


def skip(views: list[memoryview], sent: int) -> list[memoryview]:
    """What is left of ``views`` once ``sent`` bytes went out (an :class:`FdGroup` ahead of
    them went with the first of those bytes)."""
    while sent:
        head = views[0]
        if sent >= head.nbytes:
            sent -= head.nbytes
            views.pop(0)
        else:
            views[0] = head[sent:]
            sent = 0
    return views


class SocketTransport:
    """A connected stream socket (TCP or Unix domain); sends with ``sendmsg``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recv_into = sock.recv_into  # type: ignore[method-assign,assignment]  # no Python frame per read
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def recv_into(self, view: memoryview) -> int:
        return self.sock.recv_into(view)

    def send_all(self, parts: list[Any]) -> None:
        if len(parts) > IOV_MAX:
            self.send_rest(parts, 0)
            return
        sent = self.sock.sendmsg(parts)  # usually one call sends it all
        if sent != _total(parts):
            self.send_rest(parts, sent)

    def send_nowait(self, parts: list[Any]) -> list[memoryview]:
        try:
            sent = self.sock.sendmsg(parts[:IOV_MAX], (), socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        if len(parts) <= IOV_MAX and sent == _total(parts):
            return _NOTHING_LEFT
        return skip(byte_views(parts), sent)

    def send_some(self, views: list[memoryview]) -> int:
        return self.sock.sendmsg(views[:IOV_MAX])

    def send_rest(self, parts: list[Any], sent: int) -> None:
        """Send what is left of ``parts`` once their first ``sent`` bytes went out."""
        views = skip(byte_views(parts), sent)
        while views:
            views = skip(views, self.sock.sendmsg(views[:IOV_MAX]))

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def set_timeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def describe(self) -> str:
        try:
            peer = self.sock.getpeername()
        except OSError:
            return "a closed socket"
        if isinstance(peer, tuple):
            return f"{peer[0]}:{peer[1]}"
        return str(peer) or "a unix socket"


class FdGroup:
    """File descriptors that travel with the frame whose parts follow this marker (``SCM_RIGHTS``,
    on that frame's first byte); it owns them, and closes them once sent or dropped."""

    nbytes = 0  # takes no room in the stream: skip() passes it with the first byte after it

    def __init__(self, fds: list[int], transport: UnixTransport) -> None:
        self.fds = fds
        self._transport = transport
        with transport.fd_groups_lock:
            transport.fd_groups += 1

    def ancillary(self) -> list[tuple[int, int, bytes]]:
        return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self.fds).tobytes())]

    def close(self) -> None:
        if self.fds:
            fds, self.fds = self.fds, []
            with self._transport.fd_groups_lock:
                self._transport.fd_groups -= 1
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    __del__ = close


class UnixTransport(SocketTransport):
    """A Unix socket, which can carry file descriptors once the link is authenticated.

    Every read takes ancillary data too: before :meth:`accept_fds` (during the handshake)
    any file descriptor that arrives closes the link, after it they queue in
    ``received_fds`` for the frames that declare them. More than ``max_fds`` in one
    message, or a truncated control message, closes the link.
    """

    def __init__(self, sock: socket.socket, max_fds: int = 64) -> None:
        super().__init__(sock)
        del self.recv_into  # reads take ancillary data: the method, not the socket's own
        self.max_fds = max_fds
        self.ancillary_size = socket.CMSG_SPACE(max_fds * _FD_SIZE)
        self.fds_accepted = False
        self.received_fds: list[int] = []  # in arrival order, taken by the frames that declare them
        self.fd_groups = 0  # FdGroups made for this link and not yet sent or dropped
        self.fd_groups_lock = threading.Lock()

    def accept_fds(self) -> None:
        """The link is authenticated: file descriptors may arrive from now on."""
        self.fds_accepted = True

    def recv_into(self, view: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        got, ancillary, msg_flags, _ = self.sock.recvmsg_into(
            (view[:nbytes] if nbytes else view,), self.ancillary_size, int(flags) | _CMSG_CLOEXEC
        )
        if ancillary or msg_flags & _CTRUNC:
            self.take_fds(ancillary, msg_flags)
        return got

    def take_fds(self, ancillary: list[tuple[int, int, bytes]], msg_flags: int) -> None:
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % _FD_SIZE])
        problem = ""
        if msg_flags & _CTRUNC:
            problem = f"more than {self.max_fds} file descriptors in one message"
        elif not self.fds_accepted:
            problem = "file descriptors on a link that is not authenticated"
        elif len(fds) + len(self.received_fds) > 2 * self.max_fds:
            problem = "file descriptors that no frame claims"
        if problem:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise FdProtocolError(problem)
        self.received_fds += fds

    def drop_received_fds(self) -> None:
        fds, self.received_fds[:] = list(self.received_fds), []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def fd_group(self, fds: list[int]) -> FdGroup:
        return FdGroup(fds, self)

    def send_all(self, parts: list[Any]) -> None:
        if not self.fd_groups:
            super().send_all(parts)
            return
        views = byte_views(parts)
        while views:
            views = skip(views, self._send_up_to_group(views, 0))

    def send_nowait(self, parts: list[Any]) -> list[memoryview]:
        if not self.fd_groups:
            return super().send_nowait(parts)
        views = byte_views(parts)
        try:
            while views:
                views = skip(views, self._send_up_to_group(views, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass
        return views

    def send_some(self, views: list[memoryview]) -> int:
        if not self.fd_groups:
            return self.sock.sendmsg(views[:IOV_MAX])
        return self._send_up_to_group(views, 0)

    def _send_up_to_group(self, views: list[Any], flags: int) -> int:
        """One ``sendmsg`` of the bytes up to the next :class:`FdGroup`, with the fds of the
        one they start with."""
        group = views[0] if type(views[0]) is FdGroup else None
        start = 1 if group is not None else 0
        end = start
        while end < len(views) and end - start < IOV_MAX and type(views[end]) is not FdGroup:
            end += 1
        sent = self.sock.sendmsg(views[start:end], group.ancillary() if group is not None else (), flags)
        if group is not None and sent:
            group.close()  # the kernel holds them now, in the message
        return sent

    def close(self) -> None:
        super().close()
        self.drop_received_fds()


class FdProtocolError(ConnectionError):
    """File descriptors where the protocol allows none, or too many: the link is closed."""


_FD_SIZE = array.array("i").itemsize
_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))  # a plain int: "&" on the enum is a Python call
_CMSG_CLOEXEC = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))  # received fds are not inherited


class StreamTransport:
    """Any pair of binary streams: ``readinto``/``recv_into``/``recv``/``read`` in,
    ``sendall``/``write`` out (pipes, SSH channels, websocket adapters)."""

    def __init__(self, instream: Any, outstream: Any) -> None:
        self.instream = instream
        self.outstream = outstream
        self._recv_into = self._pick_reader()

    def recv_into(self, view: memoryview) -> int:
        try:
            return self._recv_into(view)
        except EOFError:  # e.g. paramiko's way of saying the transport is gone
            return 0

    def _pick_reader(self) -> Any:
        stream = self.instream
        for name in ("recv_into", "readinto"):
            method = getattr(stream, name, None)
            if method is not None:
                return lambda view: method(view) or 0
        for name in ("recv", "read1", "read"):
            method = getattr(stream, name, None)
            if method is not None:
                return lambda view: _copy_chunk(method(len(view)), view)
        raise TypeError(f"{type(stream).__name__} has no recv_into/readinto/recv/read method")

    def send_all(self, parts: list[Any]) -> None:
        stream = self.outstream
        sendall = getattr(stream, "sendall", None)
        for view in byte_views(parts):
            if sendall is not None:
                sendall(view)
            else:
                stream.write(view)
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()

    def send_nowait(self, parts: list[Any]) -> list[memoryview]:
        return byte_views(parts)  # a stream may block on any write

    def send_some(self, views: list[memoryview]) -> int:
        self.send_all(views)  # type: ignore[arg-type]
        return _total(views)

    def close(self) -> None:
        for stream in (self.outstream, self.instream):
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def set_timeout(self, seconds: float | None) -> None:
        for stream in (self.instream, self.outstream):
            settimeout = getattr(stream, "settimeout", None)
            if settimeout is not None:
                settimeout(seconds)

    def describe(self) -> str:
        return f"stream {type(self.instream).__name__}"


def socket_of(transport: Any) -> socket.socket | None:
    """The socket under ``transport`` (under its encryption too), if it has one."""
    while transport is not None:
        sock = getattr(transport, "sock", None)
        if sock is not None:
            return sock  # type: ignore[no-any-return]
        transport = getattr(transport, "inner", None)
    return None


def make_transport(instream: Any, outstream: Any | None = None) -> Transport:
    """Wrap what a ``connect`` hook returned; one socket for both ways is fastest."""
    if outstream is None or outstream is instream:
        if isinstance(instream, socket.socket):
            unix = instream.family == getattr(socket, "AF_UNIX", None) and hasattr(socket, "SCM_RIGHTS")
            if unix and type(instream) is socket.socket:
                return UnixTransport(instream)
            # A socket class of a plugin's own keeps its reads (the k8s plugin's learns why a pod
            # died when its link drops), and a Unix one may reach a forwarder: no descriptors.
            return SocketTransport(instream)
        return StreamTransport(instream, instream)
    return StreamTransport(instream, outstream)
