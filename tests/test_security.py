"""Hostile or broken peers on a live worker's port: the worker rejects them and lives on."""

from __future__ import annotations

import errno
import os
import socket
import time

import cloudpickle
import pytest

import clustercore as cc
from clustercore.engine import cluster
from clustercore.wire import handshake
from clustercore.wire.framing import encode_frame


def worker_address(pid: int) -> tuple[str, int]:
    host, port = cluster.worker_from_id(pid).connect_at
    return host, port


def dial(pid: int, via: str) -> socket.socket:
    """A connection to worker ``pid``'s TCP port, or to its abstract Unix socket."""
    if via == "tcp":
        return socket.create_connection(worker_address(pid), timeout=10)
    address = cluster.worker_from_id(pid).local_address
    assert address, "the worker announced no Unix socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    return sock


VIAS = pytest.mark.parametrize("via", ["tcp", "unix"])


@VIAS
def test_garbage_bytes_on_a_worker_port(shared_workers: list[int], via: str) -> None:
    w = shared_workers[0]
    for junk in (b"\x00" * 100, b"GET / HTTP/1.0\r\n\r\n", os.urandom(5000), b""):
        with dial(w, via) as sock:
            try:
                sock.sendall(junk)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # it may have hung up already: the junk was enough
                assert exc.errno in (errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE), exc
            assert answer(sock) == b""  # the worker closes on us without answering
    assert cc.remotecall_fetch(cc.myid, w) == w


def answer(sock: socket.socket) -> bytes:
    """What the worker sent back before closing; a close that discards bytes we sent
    (a reset) counts as having sent nothing."""
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return b""


@VIAS
def test_wrong_cookie_is_refused_and_nothing_unpickled(shared_workers: list[int], tmp_path: object, via: str) -> None:
    w = shared_workers[1]
    marker = f"{tmp_path}/should-not-exist"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (marker, "w"))

    with dial(w, via) as sock:
        transport = __import__("clustercore.wire.transport", fromlist=["x"]).SocketTransport(sock)
        try:
            handshake.connect_handshake(transport, "not-the-cookie", deadline=10, me=w + 100, target=w)
        except handshake.AuthenticationError as exc:
            assert "cookie" in str(exc)
        sock.sendall(b"".join(bytes(p) for p in encode_frame(1, cloudpickle.dumps((Evil(), (), {})))))
    assert cc.remotecall_fetch(lambda p: os.path.exists(p), w, marker) is False
    assert cc.remotecall_fetch(cc.myid, w) == w


def test_a_peer_that_never_speaks_does_not_block_others(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    idle = [socket.create_connection(worker_address(w), timeout=10) for _ in range(5)]
    try:
        started = time.monotonic()
        assert cc.remotecall_fetch(cc.myid, w) == w
        assert time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()
