"""The reference for a Python RPC: the least a Python call to another process can do.

The client pickles ``(f, args)`` and sends it with one ``sendmsg``; the server
``recv_into``s it, unpickles, calls, pickles the value and sends it with one
``sendmsg``; the client ``recv_into``s and unpickles that. Over a Unix socket
pair between two processes, with the stdlib pickler; nothing else (no ids, no
threads, no interrupts, no framing beyond one message per ``recv``). Issue 16
asks clustercore to stay within 1.5x of it; the latency table's ``x rpc``
column is each row's median over this one's.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_BUF = 1 << 16


def _serve(address: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    buf = bytearray(_BUF)
    view = memoryview(buf)
    while True:
        n = sock.recv_into(buf)
        if not n:
            break
        f, args = pickle.loads(view[:n])
        sock.sendmsg([pickle.dumps(f(*args), protocol=5)])
    sock.close()


@contextmanager
def minimal_rpc(f: Callable[..., object], *args: object) -> Iterator[Callable[[], object]]:
    """A server process kept up until exit; yields one round trip of ``f(*args)`` as a call."""
    address = f"\0bench-rpc-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(address)
        server.listen(1)
        proc = mp.get_context("spawn").Process(target=_serve, args=(address,), daemon=True)
        proc.start()
        try:
            server.settimeout(60)
            conn, _ = server.accept()
            conn.settimeout(None)
            buf = bytearray(_BUF)
            view = memoryview(buf)
            sendmsg, recv_into, dumps, loads = conn.sendmsg, conn.recv_into, pickle.dumps, pickle.loads

            def roundtrip() -> object:
                sendmsg([dumps((f, args), protocol=5)])
                n = recv_into(buf)
                if not n:
                    raise ConnectionError("the RPC server closed")
                return loads(view[:n])

            try:
                yield roundtrip
            finally:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            proc.join(10)
        finally:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
