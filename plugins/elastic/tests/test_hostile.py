"""Whoever reaches the listener: garbage, wrong cookies, half a handshake, idle crowds.

None of them may block a worker's join, cost the driver a thread, or get anything unpickled;
each is closed within the deadline, and the log gets a line per interval, not per connection.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clustercore_elastic import ElasticManager, admission
from elastic_testing import HandStarted, listening

import clustercore as cc


@pytest.fixture
def strict(hand: HandStarted) -> Iterator[ElasticManager]:
    """A manager with a short admission deadline and few places."""
    with listening(hand=hand, handshake_timeout=2.0, max_pending=16) as m:
        yield m


def _dial(m: ElasticManager) -> socket.socket:
    s = socket.create_connection(m.address, timeout=30)
    return s


def _challenge(s: socket.socket) -> bytes:
    data = b""
    while len(data) < admission.CHALLENGE_LEN:
        chunk = s.recv(admission.CHALLENGE_LEN - len(data))
        assert chunk, "the listener closed before its challenge"
        data += chunk
    assert data.startswith(admission.MAGIC)
    return data


def _closed_by_peer(s: socket.socket) -> bool:
    """Reads to the end; True once the listener has closed (each read waits for data or EOF)."""
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def _wait_failed(m: ElasticManager, timeout: float = 30.0) -> bool:
    """Polls the manager's count of failed joins: the core announces no failed addprocs."""
    import time

    deadline = time.monotonic() + timeout
    while m.failed_joins() == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _threads() -> int:
    return threading.active_count()


def test_garbage_is_closed_and_never_unpickled(strict: ElasticManager, hand: HandStarted, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self) -> object:
            return (Path.touch, (marker,))

    bomb = pickle.dumps(Bomb())
    for payload in (bomb, os.urandom(admission.PROOF_LEN), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3, bomb * 50):
        with _dial(strict) as s:
            s.sendall(payload)
            assert _closed_by_peer(s)
    assert not marker.exists()
    assert strict.rejected().get("wrong cookie", 0) >= 3
    hand.start(strict.address)
    assert len(strict.wait_for(1, timeout=60)) == 1


def test_a_wrong_cookie_gets_status_1_and_no_versions(strict: ElasticManager) -> None:
    with _dial(strict) as s:
        message = _challenge(s)
        s.sendall(admission.prove(secrets.token_hex(16), message))
        verdict = s.recv(admission.VERDICT_LEN)
        assert verdict == bytes([admission.WRONG_COOKIE]) + bytes(admission.VERSIONS.size)
        assert _closed_by_peer(s)
    assert strict.rejected() == {"wrong cookie": 1}
    assert cc.workers() == [1]


def test_half_a_handshake_blocks_no_join_and_is_closed_at_the_deadline(
    strict: ElasticManager, hand: HandStarted
) -> None:
    stalled = []
    for _ in range(4):
        s = _dial(strict)
        _challenge(s)
        s.sendall(b"\x01" * 10)  # 10 of the proof's 36 bytes, then nothing
        stalled.append(s)
    proved = _dial(strict)  # one that proves the cookie and then never sends its address line
    proved.sendall(admission.prove(cc.cluster_cookie(), _challenge(proved)))
    assert proved.recv(admission.VERDICT_LEN)[0] == admission.ADMITTED
    stalled.append(proved)
    hand.start(strict.address)
    assert len(strict.wait_for(1, timeout=60)) == 1  # joined while they hang
    for s in stalled:
        with s:
            assert _closed_by_peer(s)
    assert strict.rejected()["too slow"] == 5


def test_many_idle_connections_cost_no_thread_and_lock_out_no_worker(strict: ElasticManager, hand: HandStarted) -> None:
    before = _threads()
    idle = [_dial(strict) for _ in range(3 * strict.max_pending)]
    for s in idle:
        _challenge(s)  # each was accepted and challenged
    assert _threads() == before
    hand.start(strict.address)  # the newest: the oldest idle ones make room for it
    assert len(strict.wait_for(1, timeout=60)) == 1
    for s in idle:
        with s:
            assert _closed_by_peer(s)  # crowded out, or too slow
    counts = strict.rejected()
    assert counts.get("crowded out", 0) >= 2 * strict.max_pending
    assert counts.get("crowded out", 0) + counts.get("too slow", 0) == len(idle)


def test_rejections_are_logged_once_per_interval(strict: ElasticManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="clustercore_elastic.listener")
    for _ in range(30):
        with _dial(strict) as s:
            s.sendall(b"x" * admission.PROOF_LEN)
            assert _closed_by_peer(s)
    assert strict.rejected() == {"wrong cookie": 30}
    lines = [r.getMessage() for r in caplog.records if r.name == "clustercore_elastic.listener"]
    assert 1 <= len(lines) <= 2, lines  # the first at once; the rest counted into the next
    assert "rejected a connection" in lines[0] and "failed the cookie proof" in lines[0]


def test_a_failed_join_disturbs_no_one(strict: ElasticManager, hand: HandStarted) -> None:
    """A peer with the cookie that fails the core's handshake after admission (it closes the link):
    its batch fails, the running workers and later joins do not."""
    hand.start(strict.address)
    (first,) = strict.wait_for(1, timeout=60)
    with _dial(strict) as s:
        s.sendall(admission.prove(cc.cluster_cookie(), _challenge(s)))
        assert s.recv(admission.VERDICT_LEN)[0] == admission.ADMITTED
        s.sendall(b"clustercore_worker:1#127.0.0.1\n")
        assert s.recv(8) == b"CLSTCORE"  # the driver's hello (clustercore's handshake): we close instead
    assert _wait_failed(strict)
    assert cc.remotecall_fetch(cc.myid, first) == first
    hand.start(strict.address)
    assert len(strict.wait_for(2, timeout=60)) == 2
