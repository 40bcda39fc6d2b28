"""The floor: raw Python sockets over loopback between two processes.

Nothing a Python RPC layer does can beat these figures, so every peer is
reported as a ratio to them.

* ``pingpong``: one byte to a child process and back, ``TCP_NODELAY``;
  the latency floor. The child stays up for the whole latency run, so the
  floor is sampled in rounds alongside the peers.
* ``echo``: a length-prefixed payload to a child that receives all of it
  and then sends all of it back (store and forward, like a worker that
  returns its argument). The receiving buffers are either allocated once
  and reused (``reuse=True``), or allocated fresh for every message, which
  on these VMs is page-fault bound: a real transport must choose one, and
  both are reported.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.stats import median

_HEADER = struct.Struct("!Q")


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exactly(s: socket.socket, buf: memoryview) -> None:
    got, n = 0, len(buf)
    while got < n:
        k = s.recv_into(buf[got:])
        if k == 0:
            raise ConnectionError("peer closed")
        got += k


def _pingpong_child(port: int) -> None:
    s = _connect(port)
    one = bytearray(1)
    while s.recv_into(one):
        s.sendall(one)
    s.close()


def _echo_child(port: int, reuse: bool) -> None:
    s = _connect(port)
    head = bytearray(_HEADER.size)
    buf = bytearray(0)
    while True:
        try:
            _recv_exactly(s, memoryview(head))
        except ConnectionError:
            break
        (n,) = _HEADER.unpack(head)
        if n == 0:
            break
        if not reuse or len(buf) != n:
            buf = bytearray(n)
        _recv_exactly(s, memoryview(buf))
        s.sendall(head)
        s.sendall(buf)
    s.close()


@contextmanager
def _child(target, *args) -> Iterator[socket.socket]:  # type: ignore[no-untyped-def]
    """A spawned child process connected to us by one loopback TCP socket."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        proc = mp.get_context("spawn").Process(target=target, args=(port, *args), daemon=True)
        proc.start()
        try:
            server.settimeout(60)
            conn, _ = server.accept()
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                yield conn
            finally:
                # shutdown, not just close: a child forked from us meanwhile (mp.Pool)
                # holds a copy of this socket, and the partner must still see EOF
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            proc.join(10)
        finally:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


@contextmanager
def pingpong() -> Iterator[Callable[[], None]]:
    """A ping-pong partner kept up until exit; yields one round trip as a call."""
    with _child(_pingpong_child) as s:
        one = bytearray(b"x")
        back = bytearray(1)

        def roundtrip() -> None:
            s.sendall(one)
            if not s.recv_into(back):
                raise ConnectionError("ping-pong child closed")

        yield roundtrip


def echo_bandwidth(nbytes: int, reuse: bool, warmup: int, repeats: int) -> dict[str, float]:
    """GB/s of an ``nbytes`` echo: 2 * nbytes / round-trip time (median)."""
    payload = memoryview(bytearray(b"\xa5" * nbytes))
    head = _HEADER.pack(nbytes)
    times: list[float] = []
    with _child(_echo_child, reuse) as s:
        head_in = bytearray(_HEADER.size)
        buf = bytearray(nbytes)
        for i in range(warmup + repeats):
            if not reuse:
                buf = bytearray(nbytes)
            t0 = time.perf_counter()
            s.sendall(head)
            s.sendall(payload)
            _recv_exactly(s, memoryview(head_in))
            _recv_exactly(s, memoryview(buf))
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
        if buf[:1] != b"\xa5" or buf[-1:] != b"\xa5":
            raise AssertionError("echo returned wrong bytes")
        s.sendall(_HEADER.pack(0))
    t = median(times)
    return {"gbps": 2 * nbytes / t / 1e9, "seconds": t, "bytes": nbytes, "repeats": repeats}
