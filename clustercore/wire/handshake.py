"""Mutual authentication on the cluster cookie, bound to both ends, then a version check.

Nothing is unpickled, and every read has a fixed size, until both sides have
proven that they hold the cookie. The cookie itself never crosses the wire,
and the proofs name the two ends, so a handshake relayed to another process of
the cluster, or reflected back to the dialer's own listener, fails::

    connector (dials pid T as pid C)                 acceptor (pid A; 0 before it joins)
      | MAGIC | nonce_c (32) | C T (u32 u32)     ->  |  refuse unless T == A
      |  <-  MAGIC | nonce_s (32) | A | mac_a        |  mac_a = HMAC(cookie, "acceptor" nonce_c nonce_s C T A)
      |  check mac_a and A == T, else refuse         |
      | mac_c | version block (4)                ->  |  mac_c = HMAC(cookie, "connector" nonce_s nonce_c C T A)
      |                                              |  check mac_c, compare versions
      |  <-  status (1) | version block (4)          |  status: 0 ok, 1 auth failed, 2 version mismatch
      |  status 0 and versions equal: frames follow  |

The version block is (protocol version u16, Python major u8, Python minor u8):
pickles of functions do not travel between Python minor versions. A peer that
failed to prove it holds the cookie learns no version (the block is zeros).
Over a Unix socket both ends first check that the peer runs as the same user
(``SO_PEERCRED``) and read nothing from any other. A deadline bounds the whole
exchange, not each read (:class:`Deadline`).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from ..errors import AuthenticationError, HandshakeError, VersionMismatchError
from .transport import SocketTransport, Transport

PROTOCOL_VERSION = 9
MAGIC = b"CLSTCORE"
NONCE_LEN = 32
MAC_LEN = 32
VERSION = struct.Struct("<HBB")
ENDS = struct.Struct("<II")  # the connector's pid, the pid it means to reach
PID = struct.Struct("<I")  # the acceptor's pid
ANY = 0  # the pid of a worker that has not joined yet
_NO_VERSION = bytes(VERSION.size)
STATUS_OK, STATUS_AUTH_FAILED, STATUS_VERSION_MISMATCH = 0, 1, 2
DEFAULT_DEADLINE = 20.0


def local_versions() -> tuple[int, int, int]:
    return (PROTOCOL_VERSION, sys.version_info.major, sys.version_info.minor)


def _describe(versions: tuple[int, int, int]) -> str:
    proto, major, minor = versions
    return f"protocol {proto}, Python {major}.{minor}"


def _mac(cookie: str, role: bytes, first: bytes, second: bytes, ends: bytes) -> bytes:
    return hmac.digest(cookie.encode(), role + first + second + ends, "sha256")  # one C call


def check_peer_user(transport: Transport) -> None:
    """Over a Unix socket, refuse a peer that runs as another user, before reading a byte."""
    sock = getattr(transport, "sock", None)
    if sock is None or getattr(socket, "AF_UNIX", None) is None or sock.family != socket.AF_UNIX:
        return
    if not hasattr(socket, "SO_PEERCRED"):
        return
    _, uid, _ = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    if uid != os.getuid():
        raise AuthenticationError(f"the peer on a Unix socket runs as uid {uid}, not as this cluster's user")


PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _read_exact(transport: Transport, size: int, deadline: Deadline | None = None) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    have = 0
    while have < size:
        if deadline is not None:
            deadline.tick()
        got = transport.recv_into(view[have:])
        if not got:
            raise HandshakeError(f"{transport.describe()} closed the connection during the handshake")
        have += got
    return bytes(buf)


class Deadline:
    """Ends an exchange on ``transport`` still running after ``seconds``.

    With ``ticks=True`` the exchange calls :meth:`tick` before each blocking read or
    write: on a socket that sets the socket's own timeout to what is left (and puts the
    old one back at the end), so no thread is needed, which matters when a thousand
    workers join at once. Otherwise a timer thread closes the transport when time is up.
    """

    def __init__(self, transport: Transport, seconds: float, *, ticks: bool = False) -> None:
        self.expired = False
        self._transport = transport
        self._end = time.monotonic() + seconds
        self._sock: socket.socket | None = transport.sock if ticks and isinstance(transport, SocketTransport) else None
        self._saved = self._sock.gettimeout() if self._sock is not None else None
        self._timer: threading.Timer | None = None
        if self._sock is None:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True

    def tick(self) -> None:
        """About to block: bound the wait by what is left (a :class:`TimeoutError` when nothing is)."""
        if self._sock is None:
            return
        left = self._end - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("the deadline passed")
        self._sock.settimeout(left)

    def _expire(self) -> None:
        self.expired = True
        self._transport.close()

    def __enter__(self) -> Deadline:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        elif self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._saved)


def _run(transport: Transport, deadline: float, step: Callable[[Deadline], None]) -> None:
    peer = transport.describe()
    with Deadline(transport, deadline, ticks=True) as timer:
        try:
            step(timer)
        except (HandshakeError, OSError, ValueError) as exc:  # ValueError: a stream the timer closed
            if timer.expired or isinstance(exc, TimeoutError):
                raise HandshakeError(f"handshake with {peer} did not finish within {deadline:g} s") from None
            if isinstance(exc, (HandshakeError, ValueError)):
                raise
            raise HandshakeError(f"handshake with {peer} failed: {exc}") from exc


def connect_handshake(
    transport: Transport, cookie: str, deadline: float = DEFAULT_DEADLINE, *, me: int = 1, target: int = ANY
) -> None:
    """Authenticate as pid ``me`` dialing pid ``target`` (``ANY``: a worker that has not
    joined); raises a :class:`HandshakeError` subclass, also when the peer is not ``target``."""
    peer = transport.describe()

    def step(deadline: Deadline) -> None:
        check_peer_user(transport)
        nonce_c = os.urandom(NONCE_LEN)
        claimed = ENDS.pack(me, target)
        deadline.tick()
        transport.send_all([MAGIC, nonce_c, claimed])
        reply = _read_exact(transport, len(MAGIC) + NONCE_LEN + PID.size + MAC_LEN, deadline)
        if reply[: len(MAGIC)] != MAGIC:
            raise HandshakeError(f"{peer} is not a clustercore worker (unexpected greeting)")
        nonce_s = reply[len(MAGIC) : len(MAGIC) + NONCE_LEN]
        acceptor = reply[len(MAGIC) + NONCE_LEN : -MAC_LEN]
        ends = claimed + acceptor
        if not hmac.compare_digest(reply[-MAC_LEN:], _mac(cookie, b"acceptor", nonce_c, nonce_s, ends)):
            raise AuthenticationError(f"{peer} does not hold this cluster's cookie")
        (answered,) = PID.unpack(acceptor)
        if answered != target:
            raise AuthenticationError(f"{peer} is pid {answered}, not pid {target}: a relayed or misdirected link")
        deadline.tick()
        transport.send_all([_mac(cookie, b"connector", nonce_s, nonce_c, ends), VERSION.pack(*local_versions())])
        status, *theirs = struct.unpack("<B" + VERSION.format[1:], _read_exact(transport, 1 + VERSION.size, deadline))
        _check_status(status, tuple(theirs), peer)  # type: ignore[arg-type]

    _run(transport, deadline, step)


def _check_status(status: int, theirs: tuple[int, int, int], peer: str) -> None:
    if status == STATUS_AUTH_FAILED:
        raise AuthenticationError(f"{peer} rejected our cluster cookie")
    if status == STATUS_VERSION_MISMATCH or theirs != local_versions():
        raise VersionMismatchError(
            f"{peer} runs {_describe(theirs)} but this process runs {_describe(local_versions())}; "
            "install the same clustercore and Python minor version on both sides"
        )
    if status != STATUS_OK:
        raise HandshakeError(f"{peer} answered the handshake with unknown status {status}")


def accept_handshake(transport: Transport, cookie: str, deadline: float = DEFAULT_DEADLINE, *, me: int = ANY) -> int:
    """Authenticate as the listening side, pid ``me``; returns the pid the connector
    proved it dials from. Raises a :class:`HandshakeError` subclass."""
    peer = transport.describe()
    dialer = [0]

    def step(deadline: Deadline) -> None:
        check_peer_user(transport)
        hello = _read_exact(transport, len(MAGIC) + NONCE_LEN + ENDS.size, deadline)
        if hello[: len(MAGIC)] != MAGIC:
            raise HandshakeError(f"{peer} sent bytes that are not a clustercore handshake")
        nonce_c, claimed = hello[len(MAGIC) : -ENDS.size], hello[-ENDS.size :]
        connector, target = ENDS.unpack(claimed)
        if target != me:
            raise AuthenticationError(f"{peer} meant to reach pid {target}, not pid {me}: a relayed or stray link")
        nonce_s = os.urandom(NONCE_LEN)
        ends = claimed + PID.pack(me)
        deadline.tick()
        transport.send_all([MAGIC, nonce_s, PID.pack(me), _mac(cookie, b"acceptor", nonce_c, nonce_s, ends)])
        answer = _read_exact(transport, MAC_LEN + VERSION.size, deadline)
        if not hmac.compare_digest(answer[:MAC_LEN], _mac(cookie, b"connector", nonce_s, nonce_c, ends)):
            deadline.tick()
            transport.send_all([bytes([STATUS_AUTH_FAILED]), _NO_VERSION])
            raise AuthenticationError(f"{peer} does not hold this cluster's cookie")
        mine = local_versions()
        theirs = VERSION.unpack(answer[MAC_LEN:])
        status = STATUS_OK if theirs == mine else STATUS_VERSION_MISMATCH
        deadline.tick()
        transport.send_all([bytes([status]), VERSION.pack(*mine)])
        if status != STATUS_OK:
            raise VersionMismatchError(f"{peer} runs {_describe(theirs)} but this process runs {_describe(mine)}")
        dialer[0] = connector

    _run(transport, deadline, step)
    return dialer[0]
