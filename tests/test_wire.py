"""The wire: frame layout (golden bytes), transports, and the handshake."""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from collections.abc import Callable

import pytest

from clustercore.errors import AuthenticationError, HandshakeError, VersionMismatchError
from clustercore.wire import handshake, serialize
from clustercore.wire.framing import FLAG_ERROR, FrameReader, encode_frame
from clustercore.wire.transport import SocketTransport, StreamTransport, make_transport

from .relay import relay


def pair() -> tuple[SocketTransport, SocketTransport]:
    a, b = socket.socketpair()
    return SocketTransport(a), SocketTransport(b)


def test_frame_layout_golden_bytes() -> None:
    """The bytes docs/protocol.md shows: change both together, and bump PROTOCOL_VERSION."""
    parts = encode_frame(5, b"PAYLOAD", [b"buf1", b"buffer2"], response=(1, 7), notify=(2, 9), flags=FLAG_ERROR)
    wire = b"".join(bytes(p) for p in parts)
    assert wire.hex(" ") == (
        "07 00 00 00 05 01 02 00 01 00 00 00 07 00 00 00 00 00 00 00 02 00 00 00 09 00 00 00 00 00 00 00 "
        "04 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 "
        "50 41 59 4c 4f 41 44 62 75 66 31 62 75 66 66 65 72 32"
    )
    assert handshake.PROTOCOL_VERSION == 9


def test_frames_round_trip_with_out_of_band_buffers() -> None:
    left, right = pair()
    big = bytes(range(256)) * 40_000  # 10 MB: more than the reader's chunk
    payload, buffers = serialize.dumps({"small": 1, "big": big, "array": bytearray(b"x" * 100_000)})
    assert len(buffers) == 2 and len(payload) < 1000
    sender = threading.Thread(target=left.send_all, args=(encode_frame(1, payload, buffers, (3, 4)),))
    sender.start()
    reader = FrameReader(right)
    frame = reader.read_frame()
    sender.join()
    assert frame is not None and frame.msg_type == 1 and frame.response == (3, 4) and frame.notify == (0, 0)
    value = serialize.loads(frame.payload, frame.buffers)
    assert value["big"] == big and value["array"] == bytearray(b"x" * 100_000) and value["small"] == 1
    left.close()
    assert reader.read_frame() is None  # a clean end between frames


def test_many_small_frames_in_one_read() -> None:
    left, right = pair()
    left.send_all([p for i in range(100) for p in encode_frame(2, pickle.dumps(i))])
    reader = FrameReader(right)
    assert [pickle.loads(reader.read_frame().payload) for _ in range(100)] == list(range(100))  # type: ignore[union-attr]


def test_a_frame_cut_short_is_an_error() -> None:
    left, right = pair()
    left.send_all([encode_frame(2, b"0123456789")[0], b"01234"])
    left.close()
    with pytest.raises(EOFError):
        FrameReader(right).read_frame()


def test_stream_transport_over_pipes() -> None:
    import os

    r1, w1 = os.pipe()
    transport = StreamTransport(os.fdopen(r1, "rb", buffering=0), os.fdopen(w1, "wb", buffering=0))
    transport.send_all(encode_frame(9, b"over a pipe"))
    frame = FrameReader(transport).read_frame()
    assert frame is not None and bytes(frame.payload) == b"over a pipe"
    assert isinstance(make_transport(socket.socket()), SocketTransport)


def run_both(
    connector: Callable[[SocketTransport], None], acceptor: Callable[[SocketTransport], None]
) -> tuple[BaseException | None, BaseException | None]:
    left, right = pair()
    errors: list[BaseException | None] = [None, None]

    def side(i: int, fn: Callable[[SocketTransport], None], t: SocketTransport) -> None:
        try:
            fn(t)
        except BaseException as exc:  # noqa: BLE001
            errors[i] = exc
            t.close()

    threads = [
        threading.Thread(target=side, args=(0, connector, left)),
        threading.Thread(target=side, args=(1, acceptor, right)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors[0], errors[1]


def test_handshake_succeeds_with_the_same_cookie() -> None:
    assert run_both(
        lambda t: handshake.connect_handshake(t, "secret"), lambda t: handshake.accept_handshake(t, "secret")
    ) == (None, None)


def test_handshake_rejects_a_wrong_cookie_on_both_sides() -> None:
    connector, acceptor = run_both(
        lambda t: handshake.connect_handshake(t, "secret"), lambda t: handshake.accept_handshake(t, "other")
    )
    assert isinstance(connector, AuthenticationError) and "does not hold this cluster's cookie" in str(connector)
    assert isinstance(acceptor, HandshakeError)


def test_the_cookie_never_crosses_the_wire() -> None:
    seen = bytearray()
    left, right = pair()

    class Recording(SocketTransport):
        def send_all(self, parts: list[object]) -> None:
            for p in parts:
                seen.extend(bytes(memoryview(p)))  # type: ignore[arg-type]
            super().send_all(parts)  # type: ignore[arg-type]

    cookie = "a-very-recognisable-cookie"
    t1 = threading.Thread(target=handshake.accept_handshake, args=(Recording(right.sock), cookie))
    t1.start()
    handshake.connect_handshake(Recording(left.sock), cookie)
    t1.join()
    assert len(seen) > 64 and cookie.encode() not in seen


MAGIC_AND_NONCE = handshake.MAGIC + bytes(handshake.NONCE_LEN)


def test_the_handshake_proves_which_pids_talk() -> None:
    """The acceptor learns the connector's pid; the connector reaches the pid it meant."""
    dialer: list[int] = []
    assert run_both(
        lambda t: handshake.connect_handshake(t, "k", me=3, target=5),
        lambda t: dialer.append(handshake.accept_handshake(t, "k", me=5)),
    ) == (None, None)
    assert dialer == [3]


def test_a_handshake_meant_for_another_pid_is_refused() -> None:
    """A dial relayed to another process of the cluster (one that holds the cookie too)."""
    connector, acceptor = run_both(
        lambda t: handshake.connect_handshake(t, "k", me=3, target=5),
        lambda t: handshake.accept_handshake(t, "k", me=4),
    )
    assert isinstance(acceptor, AuthenticationError) and "meant to reach pid 5, not pid 4" in str(acceptor)
    assert isinstance(connector, HandshakeError)


def test_a_handshake_reflected_to_the_dialers_own_listener_fails() -> None:
    """Pid 2 dials pid 3; a man in the middle hands pid 2's bytes to pid 2's own
    listener and its answers back: both of pid 2's sides refuse, and nothing more flows."""
    dial_side, mitm_a = pair()  # pid 2 dialing (it thinks) pid 3
    mitm_b, listen_side = pair()  # pid 2's own listener
    relay(mitm_a.sock, mitm_b.sock)
    errors: list[BaseException | None] = [None, None]

    def listen() -> None:
        try:
            handshake.accept_handshake(listen_side, "k", me=2, deadline=5)
        except BaseException as exc:  # noqa: BLE001
            errors[1] = exc

    listener = threading.Thread(target=listen)
    listener.start()
    with pytest.raises(HandshakeError):
        handshake.connect_handshake(dial_side, "k", me=2, target=3, deadline=5)
    listener.join(10)
    assert isinstance(errors[1], AuthenticationError) and "meant to reach pid 3, not pid 2" in str(errors[1])


def test_a_peer_trickling_its_hello_is_cut_off_at_the_whole_deadline() -> None:
    """On a socket the deadline bounds the handshake, not each read (and takes no thread):
    one byte every 50 ms would keep a per-read timeout of a second happy for the whole
    48-byte hello."""
    mine, theirs = socket.socketpair()
    transport = SocketTransport(mine)
    stop = threading.Event()
    hello = handshake.MAGIC + bytes(handshake.NONCE_LEN + handshake.ENDS.size)
    sent = [0]

    def trickle() -> None:
        for byte in hello:
            if stop.wait(0.05):
                return
            try:
                theirs.send(bytes([byte]))
            except OSError:
                return
            sent[0] += 1

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        with pytest.raises(HandshakeError, match="did not finish within 1 s"):
            handshake.accept_handshake(transport, "k", deadline=1)
        assert sent[0] < len(hello)  # cut off in the middle of the hello (2.4 s of it), not after it
        assert mine.gettimeout() is None  # the socket's own timeout is as it was
    finally:
        stop.set()
        sender.join(10)
        mine.close()
        theirs.close()


def test_version_mismatch_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = handshake.local_versions()

    def connector(t: SocketTransport) -> None:
        handshake.connect_handshake(t, "k")

    def acceptor(t: SocketTransport) -> None:
        # an acceptor running another Python minor version
        hello = handshake._read_exact(t, len(handshake.MAGIC) + handshake.NONCE_LEN + handshake.ENDS.size)
        nonce_c, claimed = hello[len(handshake.MAGIC) : -handshake.ENDS.size], hello[-handshake.ENDS.size :]
        nonce_s = b"s" * handshake.NONCE_LEN
        me = handshake.PID.pack(handshake.ANY)
        mac = handshake._mac("k", b"acceptor", nonce_c, nonce_s, claimed + me)
        t.send_all([handshake.MAGIC, nonce_s, me, mac])
        handshake._read_exact(t, handshake.MAC_LEN + handshake.VERSION.size)
        t.send_all([bytes([handshake.STATUS_VERSION_MISMATCH]), handshake.VERSION.pack(real[0], 3, 99)])

    error, _ = run_both(connector, acceptor)
    assert isinstance(error, VersionMismatchError)
    assert "Python 3.99" in str(error) and f"Python {real[1]}.{real[2]}" in str(error)


def test_acceptor_rejects_another_protocol_version() -> None:
    def connector(t: SocketTransport) -> None:
        claimed = handshake.ENDS.pack(1, handshake.ANY)
        t.send_all([handshake.MAGIC, b"c" * handshake.NONCE_LEN, claimed])
        reply = handshake._read_exact(t, len(MAGIC_AND_NONCE) + handshake.PID.size + handshake.MAC_LEN)
        nonce_s = reply[len(handshake.MAGIC) : len(MAGIC_AND_NONCE)]
        ends = claimed + reply[len(MAGIC_AND_NONCE) : -handshake.MAC_LEN]
        mac = handshake._mac("k", b"connector", nonce_s, b"c" * handshake.NONCE_LEN, ends)
        t.send_all([mac, handshake.VERSION.pack(99, 3, 11)])
        status = handshake._read_exact(t, 1 + handshake.VERSION.size)
        assert status[0] == handshake.STATUS_VERSION_MISMATCH

    connector_error, acceptor_error = run_both(connector, lambda t: handshake.accept_handshake(t, "k"))
    assert connector_error is None
    assert isinstance(acceptor_error, VersionMismatchError) and "protocol 99" in str(acceptor_error)


def test_garbage_is_rejected_without_reading_further() -> None:
    def garbage(t: SocketTransport) -> None:
        t.send_all([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 40])

    _, acceptor = run_both(garbage, lambda t: handshake.accept_handshake(t, "k"))
    assert isinstance(acceptor, HandshakeError) and "not a clustercore handshake" in str(acceptor)


def test_a_silent_peer_hits_the_deadline() -> None:
    left, right = pair()
    with pytest.raises(HandshakeError, match=r"did not finish within 0\.2 s"):
        handshake.accept_handshake(right, "k", deadline=0.2)
    left.close()


def test_unpickling_is_never_reached_before_authentication(tmp_path: object) -> None:
    """A peer without the cookie that sends a pickle gets nothing run."""
    marker = f"{tmp_path}/pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (open, (marker, "w"))

    def attacker(t: SocketTransport) -> None:
        t.send_all([handshake.MAGIC, b"n" * handshake.NONCE_LEN, handshake.ENDS.pack(1, handshake.ANY)])
        handshake._read_exact(t, len(MAGIC_AND_NONCE) + handshake.PID.size + handshake.MAC_LEN)
        t.send_all([b"m" * handshake.MAC_LEN, handshake.VERSION.pack(*handshake.local_versions())])
        status = handshake._read_exact(t, 1 + handshake.VERSION.size)
        assert status == bytes([handshake.STATUS_AUTH_FAILED]) + bytes(handshake.VERSION.size)  # no version told
        t.send_all(encode_frame(1, pickle.dumps(Evil())))

    _, acceptor = run_both(attacker, lambda t: handshake.accept_handshake(t, "k"))
    assert isinstance(acceptor, AuthenticationError)
    import os

    assert not os.path.exists(marker)
    assert struct.calcsize("<IBBHiQiQ") == 32
