"""TLS on a link: a :class:`~clustercore.wire.transport.Transport` that encrypts another.

OpenSSL works here on memory buffers only (``ssl.MemoryBIO``), never on the
socket, so a link keeps its engine's rules: one thread reads, one thread at a
time writes, and no thread holds a lock while it waits for the network. The
single lock (``_crypt``) covers only encrypting and decrypting, which never
block; reading ciphertext from the link and writing it to the link happen
outside it. (OpenSSL's ``SSL`` objects must not be used by two threads at once,
which rules out a plain ``SSLSocket`` read by one thread and written by another.)

Both ends present a certificate and require one that chains to the cluster's
CA (mutual TLS 1.3). Host names are not checked: the cookie handshake that
runs inside the TLS channel then proves which process is on each end.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

from ..errors import HandshakeError
from ..wire.handshake import Deadline
from ..wire.transport import Transport, byte_views
from .credentials import TLSCredentials

RECORD_CHUNK = 256 * 1024  # plaintext encrypted per step: bounds the ciphertext held at once
READ_CHUNK = 256 * 1024  # ciphertext taken from the link per read
_NO_TLS_HINT = (
    " (what a worker that expects no TLS does: was it given the cluster's TLS credentials? A launcher"
    " must write clustercore.plugin.worker_secret() to its stdin, not only the cookie)"
)
_PLACEHOLDER = memoryview(b"\0")  # one byte standing for ciphertext a send left behind (see send_nowait)


def secure(transport: Transport, creds: TLSCredentials, *, server_side: bool, deadline: float) -> TLSTransport:
    """Run the TLS handshake on ``transport`` within ``deadline`` seconds; the encrypted
    transport. Raises :class:`HandshakeError` (certificate refused, peer gone, too slow)."""
    tls = TLSTransport(transport, creds.context(server_side=server_side), server_side)
    peer = transport.describe()
    with Deadline(transport, deadline) as timer:
        try:
            tls.handshake()
        except (ssl.SSLError, OSError) as exc:
            if timer.expired:
                raise HandshakeError(f"TLS handshake with {peer} did not finish within {deadline:g} s") from None
            hint = "" if server_side or isinstance(exc, ssl.SSLError) else _NO_TLS_HINT
            raise HandshakeError(f"TLS handshake with {peer} failed: {exc}{hint}") from None
    return tls


class TLSTransport:
    """``inner`` with every byte encrypted; what :mod:`..wire.transport` asks of a transport."""

    encrypted = True

    def __init__(self, inner: Transport, context: ssl.SSLContext, server_side: bool) -> None:
        self.inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._crypt = threading.Lock()  # the SSL object and both buffers; never held while waiting
        self._raw = memoryview(bytearray(READ_CHUNK))  # ciphertext as read from the link
        self._read: Callable[[int, memoryview], int] = self._tls.read  # type: ignore[assignment]  # a count, given a buffer
        self._left: bytes = b""  # ciphertext a send_nowait could not write; the writer sends it first

    # --- the handshake ---------------------------------------------------------------------

    def handshake(self) -> None:
        view = self._raw
        while True:
            try:
                self._tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError:
                self._send_alert()
                raise
            out = self._outgoing.read()
            if out:
                self.inner.send_all([out])
            if done:
                return
            got = self.inner.recv_into(view)
            if not got:
                raise ConnectionError("the peer closed the connection")
            self._incoming.write(view[:got])

    def _send_alert(self) -> None:
        """Tell the peer why its handshake failed, if the link still takes it."""
        alert = self._outgoing.read()
        if alert:
            try:
                self.inner.send_nowait([alert])
            except OSError:
                pass

    # --- reading (one thread at a time) ----------------------------------------------------

    def recv_into(self, view: memoryview) -> int:
        """Decrypt into ``view`` every whole record that has arrived, up to its size (a record
        holds at most 16 KiB: one call per record would cost a Python round trip each)."""
        want = view.nbytes
        if not want:
            return 0
        read, incoming, raw = self._read, self._incoming, self._raw
        while True:
            got = 0
            with self._crypt:
                try:
                    got = read(want, view)
                    while got < want and incoming.pending:
                        got += read(want - got, view[got:])
                    return got
                except ssl.SSLWantReadError:
                    if got:
                        return got
                except ssl.SSLZeroReturnError:
                    return got
            n = self.inner.recv_into(raw)
            if not n:
                return 0
            with self._crypt:  # the SSL object's buffers are touched under its lock only
                incoming.write(raw[:n])

    # --- writing (one thread at a time: the link's sender or its writer) -------------------

    def _encrypt(self, views: list[memoryview]) -> bytes:
        """Ciphertext for ``views`` (at most about ``RECORD_CHUNK`` bytes), in one record
        where it fits: small parts are joined first."""
        plain = views[0] if len(views) == 1 else b"".join(views)
        with self._crypt:
            self._tls.write(plain)
            return self._outgoing.read()

    def send_all(self, parts: list[Any]) -> None:
        self._flush_left()
        for chunk in _chunks(byte_views(parts)):
            self.inner.send_all([self._encrypt(chunk)])

    def send_nowait(self, parts: list[Any]) -> list[memoryview]:
        """Encrypt ``parts`` and write what the link takes now. Unwritten ciphertext is
        kept here and the caller gets one placeholder byte for it: while ciphertext is
        kept, the views :meth:`send_some` is given start with that byte (the link's writer
        always passes first what this returned, and nobody calls this while it writes)."""
        if self._left:
            return byte_views(parts)  # the writer owes older bytes: these wait their turn
        views = byte_views(parts)
        if sum(v.nbytes for v in views) > RECORD_CHUNK:
            return views  # big: encrypted piecewise by the writer, not held here whole
        left = self.inner.send_nowait([self._encrypt(views)])
        if not left:
            return []
        self._left = b"".join(left)
        return [_PLACEHOLDER]

    def send_some(self, views: list[memoryview]) -> int:
        if self._left:  # views[0] is the placeholder
            self._flush_left()
            return 1
        chunk = next(_chunks(views))
        self.inner.send_all([self._encrypt(chunk)])
        return sum(v.nbytes for v in chunk)

    def _flush_left(self) -> None:
        if self._left:
            left, self._left = self._left, b""
            self.inner.send_all([left])

    # --- the rest --------------------------------------------------------------------------

    def close(self) -> None:
        self.inner.close()

    def set_timeout(self, seconds: float | None) -> None:
        self.inner.set_timeout(seconds)

    def describe(self) -> str:
        return f"{self.inner.describe()} (TLS)"


def _chunks(views: list[memoryview]) -> Any:
    """``views`` in groups of about ``RECORD_CHUNK`` bytes, a view split where it must be."""
    group: list[memoryview] = []
    size = 0
    for view in views:
        while view.nbytes:
            take = view[: RECORD_CHUNK - size]
            group.append(take)
            size += take.nbytes
            view = view[take.nbytes :]
            if size == RECORD_CHUNK:
                yield group
                group, size = [], 0
    if group:
        yield group
