"""Mutual authentication on the cluster cookie, then a version check.

Nothing is unpickled, and every read has a fixed size, until both sides have
proven that they hold the cookie. The cookie itself never crosses the wire::

    connector (dials)                               acceptor (listens)
      | MAGIC | nonce_c (32)                       ->  |
      |  <-  MAGIC | nonce_s (32) | mac_a            |  mac_a = HMAC(cookie, "acceptor" nonce_c nonce_s)
      |  check mac_a, else AuthenticationError      |
      | mac_c | version block (4)                  ->  |  mac_c = HMAC(cookie, "connector" nonce_s nonce_c)
      |                                             |  check mac_c, compare versions
      |  <-  status (1) | version block (4)         |  status: 0 ok, 1 auth failed, 2 version mismatch
      |  status 0 and versions equal: frames follow |

The version block is (protocol version u16, Python major u8, Python minor u8):
pickles of functions do not travel between Python minor versions. A
deadline bounds the whole exchange (the transport is closed when it passes).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import sys
import threading

from ..errors import AuthenticationError, HandshakeError, VersionMismatchError
from .transport import Transport

PROTOCOL_VERSION = 4
MAGIC = b"CLSTCORE"
NONCE_LEN = 32
MAC_LEN = 32
VERSION = struct.Struct("<HBB")
STATUS_OK, STATUS_AUTH_FAILED, STATUS_VERSION_MISMATCH = 0, 1, 2
DEFAULT_DEADLINE = 20.0


def local_versions() -> tuple[int, int, int]:
    return (PROTOCOL_VERSION, sys.version_info.major, sys.version_info.minor)


def _describe(versions: tuple[int, int, int]) -> str:
    proto, major, minor = versions
    return f"protocol {proto}, Python {major}.{minor}"


def _mac(cookie: str, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(cookie.encode(), role + first + second, hashlib.sha256).digest()


def _read_exact(transport: Transport, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    have = 0
    while have < size:
        got = transport.recv_into(view[have:])
        if not got:
            raise HandshakeError(f"{transport.describe()} closed the connection during the handshake")
        have += got
    return bytes(buf)


class _Deadline:
    """Closes the transport if the handshake is still running after ``seconds``."""

    def __init__(self, transport: Transport, seconds: float) -> None:
        self.expired = False
        self._transport = transport
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired = True
        self._transport.close()

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def _run(transport: Transport, deadline: float, step: object) -> None:
    peer = transport.describe()
    with _Deadline(transport, deadline) as timer:
        try:
            step()  # type: ignore[operator]
        except (HandshakeError, OSError) as exc:
            if timer.expired:
                raise HandshakeError(f"handshake with {peer} did not finish within {deadline:g} s") from None
            if isinstance(exc, HandshakeError):
                raise
            raise HandshakeError(f"handshake with {peer} failed: {exc}") from exc


def connect_handshake(transport: Transport, cookie: str, deadline: float = DEFAULT_DEADLINE) -> None:
    """Authenticate as the dialing side; raises a :class:`HandshakeError` subclass."""
    peer = transport.describe()

    def step() -> None:
        nonce_c = os.urandom(NONCE_LEN)
        transport.send_all([MAGIC, nonce_c])
        reply = _read_exact(transport, len(MAGIC) + NONCE_LEN + MAC_LEN)
        if reply[: len(MAGIC)] != MAGIC:
            raise HandshakeError(f"{peer} is not a clustercore worker (unexpected greeting)")
        nonce_s = reply[len(MAGIC) : len(MAGIC) + NONCE_LEN]
        if not hmac.compare_digest(reply[-MAC_LEN:], _mac(cookie, b"acceptor", nonce_c, nonce_s)):
            raise AuthenticationError(f"{peer} does not hold this cluster's cookie")
        transport.send_all([_mac(cookie, b"connector", nonce_s, nonce_c), VERSION.pack(*local_versions())])
        status, *theirs = struct.unpack("<B" + VERSION.format[1:], _read_exact(transport, 1 + VERSION.size))
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


def accept_handshake(transport: Transport, cookie: str, deadline: float = DEFAULT_DEADLINE) -> None:
    """Authenticate as the listening side; raises a :class:`HandshakeError` subclass."""
    peer = transport.describe()

    def step() -> None:
        hello = _read_exact(transport, len(MAGIC) + NONCE_LEN)
        if hello[: len(MAGIC)] != MAGIC:
            raise HandshakeError(f"{peer} sent bytes that are not a clustercore handshake")
        nonce_c = hello[len(MAGIC) :]
        nonce_s = os.urandom(NONCE_LEN)
        transport.send_all([MAGIC, nonce_s, _mac(cookie, b"acceptor", nonce_c, nonce_s)])
        answer = _read_exact(transport, MAC_LEN + VERSION.size)
        mine = local_versions()
        if not hmac.compare_digest(answer[:MAC_LEN], _mac(cookie, b"connector", nonce_s, nonce_c)):
            transport.send_all([bytes([STATUS_AUTH_FAILED]), VERSION.pack(*mine)])
            raise AuthenticationError(f"{peer} does not hold this cluster's cookie")
        theirs = VERSION.unpack(answer[MAC_LEN:])
        status = STATUS_OK if theirs == mine else STATUS_VERSION_MISMATCH
        transport.send_all([bytes([status]), VERSION.pack(*mine)])
        if status != STATUS_OK:
            raise VersionMismatchError(f"{peer} runs {_describe(theirs)} but this process runs {_describe(mine)}")

    _run(transport, deadline, step)
