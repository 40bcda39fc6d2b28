"""Large buffers as memfds over Unix links (issue 15): the wire's side, and a hostile peer.

A frame's buffers of ``MEMFD_MIN`` bytes or more travel as sealed memfds passed
with ``SCM_RIGHTS``; the receiver checks each one (a memfd, of the declared
size, sealed) and maps it copy-on-write. Anything else from the peer (fds
before authentication, too many, a pipe, a wrong size, fds no frame declares)
closes the link, and every fd that came is closed.
"""

from __future__ import annotations

import array
import fcntl
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import clustercore as cc
from clustercore.engine import cluster
from clustercore.testing import wait_until_gone, worker_output
from clustercore.wire import memfd
from clustercore.wire.framing import HEADER, IN_MEMFD, FrameReader, encode_frame, encode_frame_with_memfds
from clustercore.wire.transport import FdProtocolError, UnixTransport

pytestmark = pytest.mark.skipif(not memfd.SUPPORTED, reason="memfds are Linux's")

BIG = memfd.MEMFD_MIN


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def memfds_open() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        except OSError:
            pass
    return count


@pytest.fixture
def link() -> Iterator[tuple[UnixTransport, UnixTransport]]:
    """Two authenticated ends of a Unix link."""
    a, b = socket.socketpair()
    left, right = UnixTransport(a), UnixTransport(b)
    left.accept_fds()
    right.accept_fds()
    yield left, right
    left.close()
    right.close()


def send_raw(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """What a hostile peer writes: bytes with any fds it likes on them."""
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else [])


def frame_declaring(sizes: list[int], payload: bytes = b"P") -> bytes:
    head = HEADER.pack(len(payload), 5, 0, len(sizes), 0, 0, 0, 0)
    return head + struct.pack(f"<{len(sizes)}Q", *(s | IN_MEMFD for s in sizes)) + payload


def sealed_memfd(data: bytes) -> int:
    return memfd.create(data)


def test_large_buffers_arrive_mapped_and_are_copies(link: tuple[UnixTransport, UnixTransport]) -> None:
    left, right = link
    data = bytearray(os.urandom(BIG + 3))
    small = b"s" * 100
    left.send_all(encode_frame_with_memfds(left, 5, b"payload", [data, small]))
    frame = FrameReader(right).read_frame()
    assert frame is not None and bytes(frame.payload) == b"payload"
    got, inline = frame.buffers
    assert memfd.fd_kept_for(got) >= 0 and bytes(got) == bytes(data) and bytes(inline) == small
    view = memoryview(got).cast("B")
    data[0] ^= 0xFF  # the sender reuses its buffer: the receiver keeps what was sent
    assert view[0] != data[0]
    view[1] ^= 0xFF  # the receiver changes its copy: nobody else sees it
    assert view[1] != data[1]
    assert left.fd_groups == 0 and not right.received_fds


def test_a_received_buffer_sent_on_unchanged_is_the_same_memfd(link: tuple[UnixTransport, UnixTransport]) -> None:
    left, right = link
    left.send_all(encode_frame_with_memfds(left, 5, b"p", [os.urandom(BIG)]))
    got = FrameReader(right).read_frame().buffers[0]  # type: ignore[union-attr]
    sent_on = memfd.fd_for(got)
    try:
        assert os.fstat(sent_on).st_ino == os.fstat(memfd.fd_kept_for(got)).st_ino  # no copy
    finally:
        os.close(sent_on)
    memoryview(got).cast("B")[5] ^= 1  # a page written: it goes as a new copy
    copied = memfd.fd_for(got)
    try:
        assert os.fstat(copied).st_ino != os.fstat(memfd.fd_kept_for(got)).st_ino
        assert os.pread(copied, 8, 0) == bytes(got[:8])
    finally:
        os.close(copied)


def test_frames_with_memfds_between_others_keep_their_order(link: tuple[UnixTransport, UnixTransport]) -> None:
    left, right = link
    parts: list[object] = []
    for i in range(5):
        if i % 2:
            parts += encode_frame_with_memfds(left, 5, b"%d" % i, [bytes([i]) * BIG])
        else:
            parts += encode_frame(5, b"%d" % i)
    left.send_all(parts)  # one sendmsg per fd group: each group rides on its frame's first byte
    reader = FrameReader(right)
    for i in range(5):
        frame = reader.read_frame()
        assert frame is not None and bytes(frame.payload) == b"%d" % i
        if i % 2:
            assert bytes(frame.buffers[0][:2]) == bytes([i, i])


def test_a_memfd_of_the_peer_is_sealed_against_change_before_it_is_mapped(
    link: tuple[UnixTransport, UnixTransport],
) -> None:
    left, right = link
    fd = os.memfd_create("unsealed", os.MFD_ALLOW_SEALING)
    os.write(fd, b"x" * 4096)
    send_raw(left.sock, frame_declaring([4096]), [fd])
    frame = FrameReader(right).read_frame()
    assert frame is not None and bytes(frame.buffers[0][:1]) == b"x"
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"y", 0)  # the sender can no longer write it
    os.close(fd)


def test_a_memfd_shrunk_before_it_is_sealed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The peer keeps its fd and shrinks the memfd while the receiver looks at it: the
    # receiver seals first and reads the size after, so what it maps is what the file
    # holds (mapped past its end, the first touch would be a SIGBUS).
    size = 1 << 20
    fd = os.memfd_create("shrinking", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    real_fcntl = fcntl.fcntl

    def sender_shrinks_first(fd_: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_ADD_SEALS:
            os.ftruncate(fd_, 0)  # the peer, a moment before the seals
        return real_fcntl(fd_, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", sender_shrinks_first)
    with pytest.raises(FdProtocolError, match="0 bytes"):
        memfd.receive(os.dup(fd), size)
    os.close(fd)


@pytest.mark.parametrize(
    "attack",
    ["a pipe", "a wrong size", "cannot be sealed", "fds on a frame declaring none", "fewer fds than declared"],
)
def test_a_hostile_peers_fds_close_the_link_and_are_closed(
    link: tuple[UnixTransport, UnixTransport], attack: str
) -> None:
    left, right = link
    mine: list[int] = []
    if attack == "a pipe":
        r, w = os.pipe()
        mine += [r, w]
        send_raw(left.sock, frame_declaring([4096]), [r])
    elif attack == "a wrong size":
        fd = sealed_memfd(b"z" * 10)
        mine.append(fd)
        send_raw(left.sock, frame_declaring([20]), [fd])
    elif attack == "cannot be sealed":
        fd = os.memfd_create("mapped", os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, 4096)
        shared = mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED)  # a writable shared mapping: F_SEAL_WRITE fails
        mine.append(fd)
        send_raw(left.sock, frame_declaring([4096]), [fd])
    elif attack == "fds on a frame declaring none":
        fd = sealed_memfd(b"q" * 4096)
        mine.append(fd)
        send_raw(left.sock, HEADER.pack(1, 5, 0, 0, 0, 0, 0, 0) + b"P", [fd])
    else:
        fd = sealed_memfd(b"q" * 4096)
        mine.append(fd)
        send_raw(left.sock, frame_declaring([4096, 4096]), [fd])
    before = open_fds()
    with pytest.raises(FdProtocolError):
        FrameReader(right).read_frame()
    assert open_fds() <= before  # whatever came is closed again
    assert not right.received_fds
    if attack == "cannot be sealed":
        shared.close()
    for fd in mine:
        os.close(fd)


def test_fds_before_authentication_close_the_link() -> None:
    a, b = socket.socketpair()
    left, right = UnixTransport(a), UnixTransport(b)  # not authenticated: accept_fds() not called
    fd = sealed_memfd(b"a" * 4096)
    before = open_fds()
    send_raw(a, b"CLSTCORE", [fd])
    with pytest.raises(FdProtocolError, match="not authenticated"):
        right.recv_into(memoryview(bytearray(8)))
    assert open_fds() <= before
    os.close(fd)
    left.close()
    right.close()


def test_too_many_fds_in_one_message_close_the_link(link: tuple[UnixTransport, UnixTransport]) -> None:
    left, right = link
    fd = sealed_memfd(b"a" * 4096)
    before = open_fds()
    send_raw(left.sock, frame_declaring([4096] * (right.max_fds + 1)), [fd] * (right.max_fds + 1))
    with pytest.raises(FdProtocolError, match="more than"):
        FrameReader(right).read_frame()
    assert open_fds() <= before
    os.close(fd)


def test_fds_of_a_frame_never_sent_are_closed(link: tuple[UnixTransport, UnixTransport]) -> None:
    left, _ = link
    before = memfds_open()
    parts = encode_frame_with_memfds(left, 5, b"p", [b"x" * BIG])
    assert memfds_open() == before + 1 and left.fd_groups == 1
    del parts  # dropped (the link closed before its writer got to it)
    assert memfds_open() == before and left.fd_groups == 0


def test_seals_of_a_sent_memfd_forbid_any_change() -> None:
    fd = memfd.create(b"k" * 8192)
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        for seal in (fcntl.F_SEAL_WRITE, fcntl.F_SEAL_SHRINK, fcntl.F_SEAL_GROW, fcntl.F_SEAL_SEAL):
            assert seals & seal
        with pytest.raises(PermissionError):
            mmap.mmap(fd, 8192, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)


# --- on live workers ------------------------------------------------------------------


def memfds_of_this_process() -> int:
    import gc

    gc.collect()
    return memfds_open()


def hold_forever(x: object, gate: object) -> None:
    """A call that keeps its argument until the test ends it (by killing this worker)."""
    cc.take(gate)  # type: ignore[arg-type]


def stream_to(target: int, rounds: int) -> int:
    """On a worker: send ``rounds`` large arrays to ``target``, one after another."""
    data = np.arange(BIG // 8 * 4, dtype=np.float64)
    for _ in range(rounds):
        cc.remotecall_fetch(float_sum, target, data)
    return rounds


def float_sum(x: np.ndarray) -> float:
    return float(x.sum())


def test_arrays_go_both_ways_without_copies_and_stay_copies(two: list[int]) -> None:
    a = np.random.default_rng(1).random(BIG // 8 * 3)
    back = cc.remotecall_fetch(lambda x: x, two[0], a)
    assert np.array_equal(back, a)
    owner = back
    while memfd.fd_kept_for(owner) < 0:  # the reply is the memfd the call got, mapped here
        owner = owner.obj if isinstance(owner, memoryview) else owner.base
    assert cc.remotecall_fetch(lambda x: (x.__setitem__(0, -1.0), float(x[0]))[1], two[0], a) == -1.0
    assert a[0] != -1.0  # the worker changed its own copy
    made = cc.remotecall_fetch(lambda: np.full(BIG // 8, 7.0), two[0])  # a result made there
    assert made.shape == (BIG // 8,) and made[0] == 7.0 and made.flags.writeable
    made[0] = 1.0
    relayed = cc.remotecall_fetch(lambda x: cc.remotecall_fetch(float_sum, two[1], x), two[0], a)
    assert relayed == float_sum(a)  # worker to worker


def test_a_killed_receiver_leaves_no_memfd_and_nothing_in_dev_shm(two: list[int]) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    memfds_before = memfds_of_this_process()
    gate = cc.RemoteChannel(lambda: cc.Channel(1), two[1])
    arrays = [np.full(BIG // 8 * 8, float(i)) for i in range(4)]
    futures = [cc.remotecall(hold_forever, two[0], a, gate) for a in arrays]
    victim = cc.worker_info(two[0]).ospid
    os.kill(victim, signal.SIGKILL)
    for f in futures:
        with pytest.raises(cc.ProcessExitedException):
            cc.fetch(f)
    del futures, arrays
    assert wait_until_gone([victim]) == []
    assert memfds_of_this_process() <= memfds_before
    assert set(os.listdir("/dev/shm")) - shm_before == set()


def test_a_sender_killed_mid_stream_leaves_no_memfd_in_the_receiver(two: list[int]) -> None:
    sender, receiver = two
    shm_before = set(os.listdir("/dev/shm"))
    before = cc.remotecall_fetch(memfds_of_this_process, receiver)
    cc.remotecall_fetch(stream_to, sender, receiver, 2)  # the link is up and used
    streaming = cc.remotecall(stream_to, sender, receiver, 10**6)
    victim = cc.worker_info(sender).ospid
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(cc.ProcessExitedException):
        cc.fetch(streaming)
    assert wait_until_gone([victim]) == []
    # the receiver has read what was in flight and seen the link end: nothing of it is left
    assert wait_for(lambda: cc.remotecall_fetch(memfds_of_this_process, receiver) <= before)
    assert set(os.listdir("/dev/shm")) - shm_before == set()


def wait_for(ready: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``ready()`` turns true before ``timeout`` (it polls: what it waits for is in
    another process and announces nothing)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def backing(x: np.ndarray) -> tuple[str, str]:
    """The inode and name of the mapping ``x``'s data lives in, in this process."""
    address = x.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(v, 16) for v in fields[0].split("-"))
            if start <= address < end:
                return fields[4], fields[5] if len(fields) > 5 else ""
    raise AssertionError("no mapping holds the array")


def global_backing(name: str) -> tuple[str, str]:
    return backing(getattr(sys.modules["__main__"], name))


def test_a_shared_array_is_the_same_pages_in_every_worker(two: list[int]) -> None:
    a = np.random.default_rng(2).random(BIG // 8 * 2)
    shared = cc.share(a)
    assert np.array_equal(shared, a) and not shared.flags.writeable
    here = backing(shared)
    assert here[1].startswith("/memfd:")
    seen = [cc.remotecall_fetch(lambda x: (backing(x), x.flags.writeable, float(x.sum())), p, shared) for p in two]
    assert seen == [(here, False, float(a.sum()))] * 2  # the owner's memfd, mapped read-only
    relayed = cc.remotecall_fetch(lambda x: cc.remotecall_fetch(backing, two[1], x), two[0], shared)
    assert relayed == here  # sent on by a worker: still the same pages
    small = cc.share(np.arange(10))
    assert not small.flags.writeable and cc.remotecall_fetch(lambda x: int(x.sum()), two[0], small) == 45
    with pytest.raises(TypeError):
        cc.share(np.array([object()]))
    before = memfds_of_this_process()
    del shared, seen
    assert memfds_of_this_process() == before - 1  # the owner's memfd goes with its array


def test_everywhere_and_pmap_copy_a_large_value_once_for_all_local_workers(two: list[int]) -> None:
    value = np.full(BIG // 8 * 2, 3.0)
    cc.everywhere("import numpy", procs=two, big=value)
    inodes = {cc.remotecall_fetch(global_backing, p, "big") for p in two}
    assert len(inodes) == 1 and next(iter(inodes))[1].startswith("/memfd:")
    assert cc.remotecall_fetch(lambda: bool(__import__("__main__").big.flags.writeable), two[0])  # a copy of its own
    backings = cc.pmap(lambda i: backing(value), range(8), pool=cc.CachingPool(two))  # value: in the closure
    assert len(set(backings)) == 1 and backings[0][1].startswith("/memfd:")


def test_fds_sent_to_a_workers_socket_before_the_handshake_are_closed_unread(two: list[int]) -> None:
    """A process of the same user without the cookie dials a worker's Unix socket and sends
    the handshake's first bytes with a memfd on them: the worker drops the connection, keeps
    no fd of it, and serves on."""
    a = two[0]
    address = cluster.worker_from_id(a).local_address
    assert address, "the worker announced no Unix socket"
    before = cc.remotecall_fetch(memfds_of_this_process, a)
    fd = memfd.create(b"x" * 4096)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with worker_output() as output:
            sock.settimeout(20)
            sock.connect(address)
            send_raw(sock, b"CLSTCORE" + bytes(32) + struct.pack("<II", 0, a), [fd])
            try:
                assert sock.recv(100) == b""  # nothing answered: the connection is closed
            except ConnectionResetError:
                pass
            assert output.wait_for("file descriptors on a link that is not authenticated")
    finally:
        sock.close()
        os.close(fd)
    assert cc.remotecall_fetch(memfds_of_this_process, a) <= before
    assert cc.remotecall_fetch(cc.myid, a) == a


def test_clustercore_memfd_0_sends_large_buffers_as_bytes() -> None:
    code = (
        "import clustercore as cc, numpy as np\n"
        "from clustercore.wire import memfd\n"
        "pid = cc.addprocs(1)[0]\n"
        "a = np.ones(memfd.MEMFD_MIN)\n"
        "back = cc.remotecall_fetch(lambda x: x, pid, a)\n"
        "assert (back == a).all() and memfd.kept_fds() == 0 and not memfd.SENDS\n"
        "cc.rmprocs([pid])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "CLUSTERCORE_MEMFD": "0"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr


def test_a_memfd_that_cannot_be_mapped_arrives_as_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # No address space or commit left to map it (strict overcommit, a huge array): the
    # frame's buffer is read into memory instead, and the link lives on.
    data = b"abc" * 1000
    fd = memfd.create(data)

    def no_room(self: object, fd_: int, size: int) -> None:
        raise OSError(12, "cannot map a received memfd")

    monkeypatch.setattr(memfd.Mapping, "__init__", no_room)
    got = memfd.receive(fd, len(data))
    assert bytes(got) == data
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: nothing kept for a copy


def test_a_unix_socket_to_this_very_process_carries_no_memfds() -> None:
    # Its other end is a forwarder here (a port-forward's socket pair), not the peer:
    # descriptors passed to it would be dropped, so none are passed or taken.
    import threading

    from clustercore.links import establish

    cookie = "c" * 32
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    dialer, acceptor = UnixTransport(a), UnixTransport(b)
    accepted: list[object] = []
    thread = threading.Thread(target=lambda: accepted.append(establish.accept(acceptor, cookie, None, me=2)))
    thread.start()
    establish.dial(dialer, cookie, None, me=1, target=2, deadline=30)
    thread.join(30)
    assert accepted and not dialer.fds_accepted and not acceptor.fds_accepted
    a.close()
    b.close()


def test_a_plugins_own_socket_class_keeps_its_reads() -> None:
    from clustercore.wire.transport import SocketTransport, make_transport

    class Watched(socket.socket):
        pass

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    watched = Watched(fileno=a.detach())
    assert type(make_transport(watched)) is SocketTransport
    assert type(make_transport(b)) is UnixTransport
    watched.close()
    b.close()
