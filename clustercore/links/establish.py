"""Where a connection becomes a link: the only place links are authenticated.

Every link, dialed or accepted, driver or worker, goes through :func:`dial` or
:func:`accept`: the peer check on a Unix socket (``SO_PEERCRED``), TLS when the
cluster uses it (every link that is not a Unix socket), then the cookie
handshake bound to both ends (:mod:`clustercore.wire.handshake`). Nothing is
unpickled before these return; what the link carries first (``JoinPGRP``,
``IdentifySocket``) is the engine's business. A Unix socket takes file
descriptors (memfds, for large buffers) only once these have returned: one that
arrives before closes the link.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from ..errors import HandshakeError
from ..wire.handshake import ANY, DEFAULT_DEADLINE, PEERCRED, accept_handshake, connect_handshake
from ..wire.transport import Transport, UnixTransport

if TYPE_CHECKING:
    from .credentials import TLSCredentials


def dial(
    transport: Transport,
    cookie: str,
    tls: TLSCredentials | None,
    *,
    me: int,
    target: int = ANY,
    deadline: float = DEFAULT_DEADLINE,
) -> Transport:
    """Authenticate a connection this process (pid ``me``) made to pid ``target``; the
    transport to use from now on. Raises :class:`~clustercore.errors.HandshakeError`."""
    transport = _secure(transport, tls, server_side=False, deadline=deadline)
    connect_handshake(transport, cookie, deadline, me=me, target=target)
    _authenticated(transport)
    return transport


def accept(
    transport: Transport, cookie: str, tls: TLSCredentials | None, *, me: int, deadline: float = DEFAULT_DEADLINE
) -> tuple[Transport, int]:
    """Authenticate a connection made to this process (pid ``me``); the transport to use
    from now on and the pid the peer proved it is. Raises ``HandshakeError``."""
    transport = _secure(transport, tls, server_side=True, deadline=deadline)
    peer = accept_handshake(transport, cookie, deadline, me=me)
    _authenticated(transport)
    return transport, peer


def _secure(transport: Transport, tls: TLSCredentials | None, *, server_side: bool, deadline: float) -> Transport:
    if tls is None or is_unix_socket(transport):  # a Unix socket: SO_PEERCRED guards it (same host)
        return transport
    from .tls import secure  # imports ssl: only where a cluster uses TLS

    try:
        return secure(transport, tls, server_side=server_side, deadline=deadline)
    except ValueError as exc:  # credentials that cannot make a context (checked when they arrive, too)
        raise HandshakeError(f"cannot use this cluster's TLS credentials: {exc}") from None


def _authenticated(transport: Transport) -> None:
    """Same host, same user (SO_PEERCRED): memfds may come, unless the socket's other end is
    this very process (a forwarder, such as a port-forward's socket pair, which would drop them)."""
    if isinstance(transport, UnixTransport) and peer_process(transport) != os.getpid():
        transport.accept_fds()


def peer_process(transport: UnixTransport) -> int:
    """The os pid at the other end of a Unix socket (0 where the system does not say)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return 0
    pid, _, _ = PEERCRED.unpack(transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    return int(pid)


def is_unix_socket(transport: Transport) -> bool:
    family = getattr(getattr(transport, "sock", None), "family", None)
    return family is not None and family == getattr(socket, "AF_UNIX", None)
