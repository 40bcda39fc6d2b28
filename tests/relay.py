"""A man in the middle for the tests: copies bytes between two sockets, both ways."""

from __future__ import annotations

import socket
import threading


def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy ``src`` to ``dst`` until either ends, then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(a: socket.socket, b: socket.socket) -> list[threading.Thread]:
    """Pump ``a`` to ``b`` and ``b`` to ``a`` on two daemon threads, started."""
    threads = [threading.Thread(target=pump, args=way, daemon=True) for way in ((a, b), (b, a))]
    for t in threads:
        t.start()
    return threads
