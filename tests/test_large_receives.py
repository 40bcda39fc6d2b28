"""Large buffers received as bytes (TCP and TLS links): recycled mappings, many TLS records per read.

A buffer of ``_MMAP_THRESHOLD`` bytes or more is received into a mapping that goes back to
the receiver's :class:`~clustercore.wire.framing.Recycler` once nothing holds it (the array
made on it, every view of it), so the next one of its size skips the kernel's zeroing of
fresh pages. These tests pin down that a mapping is never reused while any of it is still
in use, and that what a reused mapping held before never shows.
"""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from clustercore.links.certificates import make_cluster_credentials
from clustercore.links.tls import secure
from clustercore.wire import framing, serialize
from clustercore.wire.framing import FrameReader, Recycler, encode_frame
from clustercore.wire.transport import SocketTransport

SIZE = 2 << 20  # above the mmap threshold: a recycled mapping


def address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


@pytest.fixture
def link() -> Iterator[tuple[socket.socket, FrameReader]]:
    ours, theirs = socket.socketpair()
    try:
        yield ours, FrameReader(SocketTransport(theirs))
    finally:
        ours.close()
        theirs.close()


def send_and_receive(sock: socket.socket, reader: FrameReader, value: np.ndarray) -> np.ndarray:
    payload, buffers = serialize.dumps(value)
    parts = encode_frame(1, payload, buffers)
    sender = threading.Thread(target=lambda: [sock.sendall(p) for p in parts])
    sender.start()
    frame = reader.read_frame()
    sender.join()
    assert frame is not None
    return serialize.loads(frame.payload, frame.buffers)  # type: ignore[no-any-return]


def test_a_mapping_is_reused_only_once_nothing_holds_any_of_it(
    link: tuple[socket.socket, FrameReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "_recycled", Recycler(64 << 20))
    sock, reader = link
    first = np.full(SIZE // 8, 1.0)
    a = send_and_receive(sock, reader, first)
    where = address(a)
    tail = a[5:]  # a view: the mapping is still in use
    del a
    gc.collect()
    b = send_and_receive(sock, reader, np.full(SIZE // 8, 2.0))
    assert address(b) != where  # not into the mapping the view still shows
    assert (tail == 1.0).all() and (b == 2.0).all()
    freed = {where, address(b)}
    del tail, b
    gc.collect()
    c = send_and_receive(sock, reader, np.arange(SIZE // 8, dtype=np.float64))
    d = send_and_receive(sock, reader, np.full(SIZE // 8, 4.0))
    assert {address(c), address(d)} == freed  # both reused, each filled anew
    assert np.array_equal(c, np.arange(SIZE // 8, dtype=np.float64)) and (d == 4.0).all()


def test_a_received_array_is_its_owners_to_change(link: tuple[socket.socket, FrameReader]) -> None:
    sock, reader = link
    a = send_and_receive(sock, reader, np.zeros(SIZE // 8))
    a[:] = 7.0  # writable, and no later receive writes over it while it lives
    b = send_and_receive(sock, reader, np.zeros(SIZE // 8))
    assert (a == 7.0).all() and (b == 0.0).all()


def test_freed_mappings_kept_stay_under_the_limit() -> None:
    recycler = Recycler(3 << 20)
    buffers = [recycler.take(SIZE) for _ in range(3)]
    held = [memoryview(b) for b in buffers]
    assert recycler.kept == 0
    del buffers, held
    gc.collect()
    assert recycler.kept == SIZE  # a second one would pass the limit: unmapped
    again = recycler.take(SIZE)
    assert recycler.kept == 0 and len(again) == SIZE


def test_tls_decrypts_every_record_that_has_arrived_in_one_read() -> None:
    """A record holds at most 16 KiB: one read per record would cost a Python round trip each."""
    creds = make_cluster_credentials("test")
    left, right = socket.socketpair()
    ends: dict[str, object] = {}

    def server() -> None:
        ends["server"] = secure(SocketTransport(right), creds, server_side=True, deadline=10)

    t = threading.Thread(target=server)
    t.start()
    client = secure(SocketTransport(left), creds, server_side=False, deadline=10)
    t.join()
    server_end = ends["server"]
    data = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    sender = threading.Thread(target=client.send_all, args=([data],))
    sender.start()
    got = bytearray(len(data))
    view = memoryview(got)
    done, reads = 0, 0
    while done < len(data):
        done += server_end.recv_into(view[done:])  # type: ignore[attr-defined]
        reads += 1
    sender.join()
    left.close()
    right.close()
    assert got == data
    assert reads < len(data) // (16 << 10)  # fewer reads than records
