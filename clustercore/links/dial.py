"""Dialing a worker over TCP: the socket options every such link gets."""

from __future__ import annotations

import socket

KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}  # a vanished host is noticed in ~1 min


def enable_keepalive(sock: socket.socket) -> None:
    """TCP keepalive, so a link to a host that vanished (no FIN, no RST) ends too."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass  # not a TCP socket, or the platform lacks the options: nothing to do


def connect_to_worker(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to a worker, with keepalive; a clear ``ConnectionError`` if it fails."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ConnectionError(f"cannot connect to worker at {host}:{port}: {exc}") from exc
    sock.settimeout(None)
    enable_keepalive(sock)
    return sock
