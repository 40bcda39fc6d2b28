"""Before anyone is trusted: what a worker's listeners, the cookie and the address line accept.

The worker tests dial a real worker's TCP port from this process (silent,
slow, garbage, half a handshake) while calls keep flowing, and read the
worker's thread count with remote calls.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import resource
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from clustercore_k8s.logstream import PodLog

import clustercore as cc
from clustercore.engine import cluster
from clustercore.engine.launching import forward_worker_output
from clustercore.logs import LazyLogger, RateLimit
from clustercore.testing import OutputLog, worker_output
from clustercore.wire import handshake
from clustercore.wire.transport import SocketTransport

HELLO = handshake.MAGIC + bytes(handshake.NONCE_LEN)  # the start of any connector's first message
GARBAGE = b"GET / HTTP/1.0\r\n\r\n"

# --- the address line: a whole line, never one that quotes it ---------------------------------

QUOTING = [
    b"echo clustercore_worker:6666#evil.example\n",
    b"clustercore_worker:6666#evil.example is what the worker would print\n",
    b"  clustercore_worker:6666#evil.example extra\n",
]


def test_the_output_forwarder_takes_only_a_whole_address_line() -> None:
    r, w = os.pipe()
    with worker_output() as out:
        forwarder = forward_worker_output(97, os.fdopen(r, "rb"))
        with os.fdopen(w, "wb") as writer:
            writer.write(b"".join(QUOTING) + b"clustercore_worker:4711#10.0.0.7\r\nafter\n")
        assert forwarder.wait_address(10) == ("10.0.0.7", 4711)
        assert out.wait_for("From worker 97:\tafter", timeout=10)
    forwarded = [line for line in out.lines if line.startswith("From worker 97:")]
    assert forwarded == [f"From worker 97:\t{q.decode().rstrip()}" for q in QUOTING] + ["From worker 97:\tafter"]


class _OneLog:
    """Just what PodLog uses of a KubeApi: one pod log stream."""

    def __init__(self, text: bytes) -> None:
        self.stream = io.BytesIO(text)

    def follow_log(self, name: str) -> io.BytesIO:
        return self.stream

    def forget_stream(self, resp: object) -> None:
        pass


def test_a_pod_log_yields_only_a_whole_address_line() -> None:
    log = PodLog(_OneLog(b"".join(QUOTING) + b"clustercore_worker:4711#10.0.0.7\n"), "pod")  # type: ignore[arg-type]
    assert log.read_address(10) == ("10.0.0.7", 4711)
    assert [log.readline() for _ in QUOTING] == QUOTING  # forwarded later as the worker's output
    assert PodLog(_OneLog(b"".join(QUOTING)), "pod").read_address(10) is None  # type: ignore[arg-type]


# --- rate-limited warnings ------------------------------------------------------------------------


def test_a_rate_limit_prints_one_line_per_interval_and_counts_the_rest() -> None:
    now = [100.0]
    limit = RateLimit(10.0, clock=lambda: now[0])
    assert limit.admit("a") == "a"
    assert [limit.admit(x) for x in "bcd"] == [None, None, None]
    assert limit.due() == 110.0 and limit.overdue() is None
    now[0] = 110.0
    assert limit.overdue() == "d (3 times in the last 10 s)"
    assert limit.overdue() is None and limit.due() is None
    now[0] = 115.0
    assert limit.admit("e") is None
    now[0] = 125.0
    assert limit.admit("f") == "f (2 times in the last 15 s)"  # e and f, since the line at 110
    now[0] = 200.0
    assert limit.admit("g") == "g"


def test_a_lazy_logger_holds_back_a_limited_warning_and_flushes_its_count(caplog: pytest.LogCaptureFixture) -> None:
    log = LazyLogger("clustercore.test_preauth")
    now = [100.0]
    log.limit("rejected %s")._clock = lambda: now[0]
    with caplog.at_level(logging.WARNING, logger="clustercore.test_preauth"):
        for i in range(5):
            log.warning("rejected %s", i)
        log.warning("other %s", 1)  # another template: not limited
        assert log.flush_limits() == 110.0
        now[0] = 111.0
        assert log.flush_limits() is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["rejected 0", "other 1", "rejected 4 (4 times in the last 11 s)"]
    assert caplog.records[0].pathname == __file__  # the caller's line, not the logger's


# --- helpers for a worker's listeners -----------------------------------------------------------


def worker_address(pid: int) -> tuple[str, int]:
    host, port = cluster.worker_from_id(pid).connect_at
    return host, port


def set_on_worker(pid: int, name: str, value: object) -> object:
    """Set ``clustercore.engine.worker.<name>`` in worker ``pid``; returns the old value."""

    def swap(name: str, value: object) -> object:
        module = sys.modules["clustercore.engine.worker"]
        old = getattr(module, name)
        setattr(module, name, value)
        return old

    return cc.remotecall_fetch(swap, pid, name, value)


def threads_on(pid: int) -> int:
    return cc.remotecall_fetch(threading.active_count, pid)


@contextlib.contextmanager
def dialed(pid: int, n: int, send: bytes = b"") -> Iterator[list[socket.socket]]:
    """``n`` connections to worker ``pid``'s TCP port, each having sent ``send``; closed after."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.create_connection(worker_address(pid), timeout=10)
            socks.append(sock)
            if send:
                sock.sendall(send)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def answer(sock: socket.socket) -> bytes:
    """What the worker sent; a close, or a reset, reads as ``b""``."""
    try:
        return sock.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def closed_by_worker(socks: list[socket.socket], want: int, timeout: float) -> dict[socket.socket, float]:
    """Wait (at most ``timeout`` s) until the worker has closed ``want`` of ``socks``; when each closed."""
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < want and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if answer(sock) == b"":
                    sel.unregister(sock)
                    closed[sock] = time.monotonic()
    return closed


def forget_unix_socket_of(pid: int) -> None:
    """Make this worker dial ``pid`` over TCP, as a worker on another host does."""
    cluster.worker_from_id(pid).local_address = ""


def ask_through(via: int, pid: int) -> int:
    """``myid()`` on ``pid``, asked by worker ``via`` over their link (opened if need be)."""
    return cc.remotecall_fetch(lambda p: cc.remotecall_fetch(cc.myid, p), via, pid)


@pytest.fixture
def lines() -> Iterator[OutputLog]:
    with worker_output() as log:
        yield log


def rejections(lines: list[str]) -> int:
    """How many rejections ``lines`` report: one each, or the count a rate-limited line carries."""
    return sum(int(m[1]) if (m := re.search(r"\((\d+) times in the last", line)) else 1 for line in lines)


# --- a worker's listeners -----------------------------------------------------------------------


def test_200_silent_connections_cost_no_thread_and_lock_nobody_out(two: list[int]) -> None:
    w, other = two
    limit = 128  # PREAUTH_LIMIT
    before = threads_on(w)
    with dialed(w, 200) as socks:
        # beyond the cap the oldest silent ones are closed at once; the newest wait
        closed = closed_by_worker(socks, 200 - limit, timeout=30)
        assert len(closed) == 200 - limit
        assert set(closed) == set(socks[: len(closed)])
        assert cc.remotecall_fetch(cc.myid, w) == w
        during = threads_on(w)
        # a peer that speaks at once (here over TCP, as from another host) is not locked out
        cc.remotecall_fetch(forget_unix_socket_of, other, w)
        assert ask_through(other, w) == w
        assert not closed_by_worker(socks[len(closed) + 1 :], 1, timeout=0.5)  # the newest still wait
    print(f"threads on worker {w}: {before} before 200 silent connections, {during} with them")
    assert during <= before + 1  # +1: a call may be running on a thread of its own


def test_slow_loris_connections_get_no_thread_and_are_dropped_at_the_deadline(two: list[int]) -> None:
    w, _ = two
    set_on_worker(w, "PREAUTH_DEADLINE", 3.0)
    before = threads_on(w)
    seen = []
    with dialed(w, 20) as socks:
        opened = time.monotonic()
        closed: dict[socket.socket, float] = {}
        for sent in range(1, 12):  # one byte of a well-formed hello a second, from each
            for sock in socks:
                if sock not in closed:
                    with contextlib.suppress(OSError):
                        sock.sendall(HELLO[sent - 1 : sent])
            assert cc.remotecall_fetch(cc.myid, w) == w
            seen.append(threads_on(w))
            closed.update(closed_by_worker([s for s in socks if s not in closed], len(socks) - len(closed), 1.0))
            if len(closed) == len(socks):
                break
        assert len(closed) == len(socks)
    assert min(closed.values()) - opened >= 2.0  # not taken for garbage: dropped at the deadline
    assert max(seen) <= before + 1, (before, seen)


def test_stalled_handshakes_hold_at_most_the_cap_in_threads_and_the_rest_wait(two: list[int]) -> None:
    w, _ = two
    limit = 32
    before = threads_on(w)
    with dialed(w, 100, send=HELLO) as socks:  # a hello, then silence: each waits for a thread, then stalls it
        deadline = time.monotonic() + 30
        while (during := threads_on(w)) < before + limit and time.monotonic() < deadline:
            time.sleep(0.05)  # no event to wait on in another process: sample its thread count
        assert during >= before + limit  # a thread for each of the first 32 (their deadlines take none)
        assert not closed_by_worker(socks, 1, timeout=1.0)  # the other 68 wait for a thread, not refused
        assert cc.remotecall_fetch(cc.myid, w) == w
        during = max(during, threads_on(w))
    print(f"threads on worker {w}: {before} before 100 stalled handshakes, {during} with them")
    assert during <= before + limit + 1


def authenticate(sock: socket.socket, pid: int) -> None:
    """Run the connector's side of the handshake with worker ``pid``, as pid 1."""
    takes_target = "target" in inspect.signature(handshake.connect_handshake).parameters  # protocol 5 on
    kwargs = {"target": pid} if takes_target else {}
    handshake.connect_handshake(SocketTransport(sock), cc.cluster_cookie(), 20, **kwargs)


def test_a_burst_of_real_peers_waits_for_room_and_none_is_refused(two: list[int]) -> None:
    w, _ = two
    n = 100  # PREAUTH_THREADS is 32: most of them wait for a thread a while
    start = threading.Barrier(n)
    failed: list[BaseException] = []

    def dial() -> None:
        try:
            start.wait(10)
            with socket.create_connection(worker_address(w), timeout=30) as sock:
                authenticate(sock, w)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    dialers = [threading.Thread(target=dial) for _ in range(n)]
    for t in dialers:
        t.start()
    for t in dialers:
        t.join(60)
    assert not any(t.is_alive() for t in dialers)
    assert failed == []
    assert cc.remotecall_fetch(cc.myid, w) == w


def test_rejections_print_one_line_per_interval_with_a_count(two: list[int], lines: OutputLog) -> None:
    w, _ = two
    cc.remotecall_fetch(lambda: setattr(sys.modules["clustercore.engine.worker"].log.limit(
        "rejected a connection: %s"), "interval", 2.0), w)  # fmt: skip
    started = time.monotonic()
    for send in (GARBAGE, HELLO, b""):  # rejected before a thread, by process_messages, on a close
        for _ in range(4):
            with dialed(w, 17, send=send) as socks:
                for sock in socks:
                    with contextlib.suppress(OSError):  # unless the worker has closed it already
                        sock.shutdown(socket.SHUT_WR)
                assert len(closed_by_worker(socks, len(socks), timeout=30)) == len(socks)
    assert lines.wait(lambda: rejections(lines.of(w, "rejected a connection")) >= 204, timeout=30)
    elapsed = time.monotonic() - started
    printed = lines.of(w, "rejected a connection")
    assert rejections(printed) == 204
    assert len(printed) <= 2 + elapsed / 2.0, printed
    assert "times in the last" in printed[-1]


def test_a_thread_that_cannot_start_pauses_accepting_and_the_peer_waits(two: list[int], lines: OutputLog) -> None:
    w, other = two

    def fail_next_starts(n: int) -> None:
        real = threading.Thread.start
        left = [n]

        def start(self: threading.Thread) -> None:
            if self.name == "clustercore-incoming" and left[0]:
                left[0] -= 1
                raise RuntimeError("can't start new thread")
            real(self)

        threading.Thread.start = start  # type: ignore[method-assign]
        threading.Thread.failures_left = left  # type: ignore[attr-defined]
        threading.Thread.real_start = real  # type: ignore[attr-defined]

    def failures_left() -> int:
        threading.Thread.start = threading.Thread.real_start  # type: ignore[attr-defined,method-assign]
        return threading.Thread.failures_left[0]  # type: ignore[attr-defined,no-any-return]

    cc.remotecall_fetch(fail_next_starts, w, 3)
    assert ask_through(other, w) == w  # a new link into w: its thread starts at the fourth try
    assert cc.remotecall_fetch(failures_left, w) == 0
    with dialed(w, 1, send=HELLO) as socks:  # and w accepts on
        socks[0].shutdown(socket.SHUT_WR)
        assert closed_by_worker(socks, 1, timeout=30)
    assert lines.wait(lambda: bool(lines.of(w, "could not start a thread")), timeout=10)
    (line,) = lines.of(w, "could not start a thread")  # once, not once a failure
    assert "can't start new thread; accepting again in" in line


def test_accept_errors_pause_the_loop_instead_of_ending_it(two: list[int], lines: OutputLog) -> None:
    w, _ = two
    with dialed(w, 1, send=GARBAGE) as socks:  # the worker logs once now: later, logging opens no file
        assert closed_by_worker(socks, 1, timeout=30)

    def starve_descriptors() -> tuple[int, int]:
        old = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd")) - 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, old[1]))
        return old

    old = cc.remotecall_fetch(starve_descriptors, w)
    try:
        with dialed(w, 1, send=GARBAGE) as socks:
            assert lines.wait(lambda: bool(lines.of(w, "could not accept a connection")), timeout=30)
            assert "Too many open files" in lines.of(w, "could not accept a connection")[0]
            assert not closed_by_worker(socks, 1, timeout=0.2)  # still in the listener's backlog
            cc.remotecall_fetch(resource.setrlimit, w, resource.RLIMIT_NOFILE, old)
            assert closed_by_worker(socks, 1, timeout=30)  # accepted after all, and rejected
    finally:
        cc.remotecall_fetch(resource.setrlimit, w, resource.RLIMIT_NOFILE, old)
    assert cc.remotecall_fetch(cc.myid, w) == w


def test_only_a_closed_listener_ends_the_accept_loop() -> None:
    from clustercore.engine import worker

    listener = socket.create_server(("127.0.0.1", 0))
    loop = threading.Thread(target=worker._accept_forever, args=(listener,), daemon=True)
    loop.start()
    with socket.create_connection(listener.getsockname(), timeout=10) as sock:
        sock.sendall(GARBAGE)
        assert answer(sock) == b""
    assert loop.is_alive()
    listener.shutdown(socket.SHUT_RDWR)
    loop.join(10)
    assert not loop.is_alive()
    listener.close()


def test_a_flood_on_one_listener_locks_nobody_out_of_the_other() -> None:
    # One gate thread serves a worker's TCP port and its abstract Unix socket; each keeps
    # its own limits. A TCP flood that has spoken (every place taken, for 20 s each) must
    # not stop the other listener from taking (here: rejecting) a connection at once.
    from clustercore.engine import worker

    flooded = socket.create_server(("127.0.0.1", 0), backlog=256)
    other = socket.create_server(("127.0.0.1", 0))
    gate = worker._Gate((flooded, other))
    loop = threading.Thread(target=gate.run, daemon=True)
    loop.start()
    flood: list[socket.socket] = []
    try:
        for _ in range(worker.PREAUTH_LIMIT + 8):
            sock = socket.create_connection(flooded.getsockname(), timeout=10)
            sock.sendall(HELLO)
            flood.append(sock)
        deadline = time.monotonic() + 30
        while len(gate.waiting) + len(gate.ready) + gate.threads < worker.PREAUTH_LIMIT:
            assert time.monotonic() < deadline, "the gate did not take the flood"
            time.sleep(0.01)  # the gate's own thread takes them: nothing to wait on from here
        with socket.create_connection(other.getsockname(), timeout=10) as sock:
            sock.sendall(GARBAGE)
            # The flood holds its places for PREAUTH_DEADLINE (20 s): with one limit for both
            # listeners this connection would wait in the backlog that long.
            assert closed_by_worker([sock], 1, timeout=10)
    finally:
        for sock in flood:
            sock.close()
        flooded.shutdown(socket.SHUT_RDWR)
        other.shutdown(socket.SHUT_RDWR)
        loop.join(10)
        flooded.close()
        other.close()
    assert not loop.is_alive()


# --- the cookie ----------------------------------------------------------------------------------

WEAK = ["short", "0123456789abcdef", "0123456789abcdef0123456789abcde", "1" * 38, "x" * 21]
LONG_ENOUGH = [secrets.token_hex(16), secrets.token_urlsafe(16), "9" * 39, "x" * 22]


def test_a_cookie_weaker_than_128_bits_is_refused(fresh: None) -> None:
    mine = cluster.PGRP.cookie
    try:
        for weak in WEAK:
            with pytest.raises(ValueError, match="weaker than 128 random bits") as refused:
                cc.cluster_cookie(weak)
            assert weak not in str(refused.value)  # a secret, even a weak one, is not echoed
        for strong in LONG_ENOUGH:
            assert cc.cluster_cookie(strong) == strong
    finally:
        cluster.PGRP.cookie = mine
    assert len(cc.cluster_cookie()) >= 32  # the generated one passes its own rule


def test_a_worker_refuses_a_weak_cookie() -> None:
    worker = subprocess.run(
        [sys.executable, "-m", "clustercore", "worker", "--bind-to", "127.0.0.1"],
        input="some-cookie\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0
    assert "weaker than 128 random bits" in worker.stdout + worker.stderr
    assert "clustercore_worker:" not in worker.stdout  # it never listened
