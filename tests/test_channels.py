"""Local and remote channels (Julia's Channel and RemoteChannel tests, ported)."""

from __future__ import annotations

import math
import threading
import time

import pytest

import clustercore as cc
from clustercore.errors import InvalidStateError

from .test_futures import owner_table_size


def test_local_channel_fifo_fetch_isready_close() -> None:
    ch = cc.Channel(3)
    assert not cc.isready(ch)
    for i in range(3):
        cc.put(ch, i)
    assert cc.isready(ch) and cc.fetch(ch) == 0
    assert [cc.take(ch) for _ in range(2)] == [0, 1]
    ch.close()
    with pytest.raises(InvalidStateError):
        ch.put(9)
    assert list(ch) == [2]  # iteration drains what is left, then stops
    with pytest.raises(InvalidStateError):
        ch.take()


def test_local_channel_blocks_when_full_and_when_empty() -> None:
    ch = cc.Channel(1)
    ch.put("a")
    second_put_done = threading.Event()
    threading.Thread(target=lambda: (ch.put("b"), second_put_done.set()), daemon=True).start()
    assert not second_put_done.wait(0.1)  # full: the put waits
    assert ch.take() == "a"
    assert second_put_done.wait(5)
    assert ch.take() == "b"
    with pytest.raises(TimeoutError):
        ch.wait(timeout=0.05)


def test_unbuffered_channel_hands_over() -> None:
    ch = cc.Channel(0)
    got: list[int] = []
    taker = threading.Thread(target=lambda: got.append(ch.take()))
    taker.start()
    ch.put(5)  # returns once the taker has it
    taker.join(5)
    assert got == [5]


def test_channel_size_is_validated() -> None:
    with pytest.raises(ValueError):
        cc.Channel(-1)
    with pytest.raises(ValueError):
        cc.Channel(2.5)
    assert cc.Channel(math.inf).size == math.inf


def test_remote_channel_default_and_factory(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    one = cc.RemoteChannel(w)
    assert one.where == w
    one.put(1)
    assert cc.isready(one) and cc.fetch(one) == 1 and cc.take(one) == 1
    ten = cc.RemoteChannel(lambda: cc.Channel(10), w)
    for i in range(10):
        ten.put(i)
    assert [ten.take() for _ in range(10)] == list(range(10))
    here = cc.RemoteChannel()
    assert here.where == 1
    here.put("x")
    assert cc.channel_from_id(cc.remoteref_id(here)).take() == "x"


def test_producer_and_consumer_on_other_workers(shared_workers: list[int]) -> None:
    """Owner pid 1, producer on one worker, consumer on the other."""
    producer, consumer = shared_workers
    ch = cc.RemoteChannel(lambda: cc.Channel(4))
    produced = cc.remotecall(lambda c: [c.put(i) for i in range(50)] and c.close(), producer, ch)
    total = cc.remotecall(lambda c: sum(x for x in c), consumer, ch)
    assert total.fetch() == sum(range(50))
    produced.wait()


def test_blocked_put_and_take_do_not_stall_the_owner(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    ch = cc.RemoteChannel(lambda: cc.Channel(1), w)
    ch.put("fill")
    blocked_put = cc.remotecall(lambda c: c.put("second"), shared_workers[1], ch)
    empty = cc.RemoteChannel(lambda: cc.Channel(1), w)
    blocked_take = cc.remotecall(lambda c: c.take(), shared_workers[1], empty)
    started = time.monotonic()
    assert cc.remotecall_fetch(lambda: "owner serves", w) == "owner serves"
    assert time.monotonic() - started < 5
    assert not blocked_put.isready() and not blocked_take.isready()
    assert ch.take() == "fill"
    blocked_put.wait()
    assert ch.take() == "second"
    empty.put("now")
    assert blocked_take.fetch() == "now"


def test_fetch_on_an_empty_remote_channel_waits(shared_workers: list[int]) -> None:
    ch = cc.RemoteChannel(shared_workers[1])
    waiting = cc.remotecall(lambda c: c.fetch(), shared_workers[0], ch)
    with pytest.raises(TimeoutError):
        waiting.wait(timeout=0.1)
    ch.put(7)
    assert waiting.fetch() == 7
    assert ch.take() == 7


def test_closed_remote_channel(shared_workers: list[int]) -> None:
    ch = cc.RemoteChannel(lambda: cc.Channel(5), shared_workers[0])
    ch.put(1)
    ch.put(2)
    ch.close()
    with pytest.raises(InvalidStateError):
        ch.put(3)
    assert list(ch) == [1, 2]


def test_remote_channels_are_garbage_collected(shared_workers: list[int]) -> None:
    a, b = shared_workers
    before = owner_table_size(a)
    ch = cc.RemoteChannel(lambda: cc.Channel(2), a)
    cc.remotecall_fetch(lambda c: setattr(__import__("__main__"), "kept_channel", c), b, ch)
    del ch
    assert owner_table_size(a) == before + 1
    cc.remotecall_fetch(lambda: delattr(__import__("__main__"), "kept_channel"), b)
    cc.remotecall_fetch(__import__("tests.test_futures", fromlist=["x"])._settled_table_size, b)
    assert owner_table_size(a) == before


def test_channel_from_id_only_on_the_owner(shared_workers: list[int]) -> None:
    ch = cc.RemoteChannel(shared_workers[0])
    with pytest.raises(ValueError, match="only its owner"):
        cc.channel_from_id(cc.remoteref_id(ch))
    assert (
        cc.remotecall_fetch(lambda c: type(cc.channel_from_id(cc.remoteref_id(c))).__name__, shared_workers[0], ch)
        == "Channel"
    )


def test_worker_id_from_socket(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    conn = cc.engine.cluster.worker_from_id(w).conn
    assert cc.worker_id_from_socket(conn.transport.sock) == w
    assert cc.worker_id_from_socket(object()) == -1
