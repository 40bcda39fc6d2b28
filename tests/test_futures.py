"""Futures: write-once values, waiting, asyncio, and distributed garbage collection."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

import clustercore as cc
from clustercore.engine import cluster, remoterefs


def _settled_table_size() -> int:
    gc.collect()
    remoterefs.flush_gc()
    return len(cluster.PGRP.refs)


def owner_table_size(pid: int) -> int:
    """How many references pid's owner table holds, once queued releases have reached it."""
    gc.collect()
    remoterefs.flush_gc()  # our releases travel ahead of the next message to pid
    return _settled_table_size() if pid == 1 else cc.remotecall_fetch(_settled_table_size, pid)


def test_local_future_is_write_once() -> None:
    fut = cc.Future()
    assert fut.where == 1 and not cc.isready(fut)
    cc.put(fut, [1, 2])
    assert cc.isready(fut) and cc.fetch(fut) == [1, 2]
    with pytest.raises(RuntimeError, match="only once"):
        fut.put(3)


def test_remote_future_put_fetch_wait(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    fut = cc.Future(w)
    assert fut.where == w and not fut.isready()
    with pytest.raises(TimeoutError):
        cc.wait(fut, timeout=0.05)
    setter = cc.remotecall(lambda f: f.put("from worker"), shared_workers[1], fut)
    assert cc.wait(fut) is fut
    assert fut.fetch() == "from worker"
    setter.wait()
    other = cc.Future(w)
    other.put(1)
    with pytest.raises(RuntimeError, match="only once"):
        cc.remotecall_fetch(lambda f: f.put(2), shared_workers[1], other) if False else other.put(2)
    fresh_copy = cc.Future.__new__(cc.Future)  # a second handle without the cached value
    fresh_copy._init(w, other.rrid, counted=False)
    with pytest.raises(RuntimeError, match="only once"):
        fresh_copy.put(2)


def test_second_put_from_another_process_is_an_error(shared_workers: list[int]) -> None:
    fut = cc.Future(1)
    fut.put("first")
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(lambda f: f.put("second"), shared_workers[0], fut)
    assert "only once" in str(info.value)


def test_future_unknown_pid() -> None:
    with pytest.raises(ValueError, match="no process with pid 77"):
        cc.Future(77)


def test_future_is_awaitable(shared_workers: list[int]) -> None:
    async def main() -> list[int]:
        futures = [cc.remotecall(lambda x: x + 1, w, w) for w in shared_workers]
        return list(await asyncio.gather(*futures))

    assert asyncio.run(main()) == [w + 1 for w in shared_workers]


def test_remoteref_id_and_where(shared_workers: list[int]) -> None:
    fut = cc.remotecall(cc.myid, shared_workers[0])
    rrid = cc.remoteref_id(fut)
    assert rrid == cc.RRID(1, fut.id) and rrid.whence == 1
    assert fut.where == shared_workers[0]


def test_dropped_futures_are_freed_on_the_owner(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    before = owner_table_size(w)
    for i in range(200_000):
        cc.remotecall(int, w, i)
    assert owner_table_size(w) <= before


def test_kept_futures_stay_until_dropped(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    before = owner_table_size(w)
    kept = [cc.remotecall(int, w, i) for i in range(100)]
    kept[-1].wait()
    assert owner_table_size(w) == before + 100
    values = [f.fetch() for f in kept]  # fetching caches the value and releases the owner's copy
    assert values == list(range(100))
    assert owner_table_size(w) == before
    del kept, values
    assert owner_table_size(w) == before


def test_future_passed_between_workers_survives_the_creator_dropping_it(shared_workers: list[int]) -> None:
    a, b = shared_workers
    before = owner_table_size(a)
    fut = cc.remotecall(lambda: "payload", a)
    cc.remotecall_fetch(lambda f: setattr(__import__("__main__"), "held", f), b, fut)
    del fut
    assert owner_table_size(a) == before + 1  # b still holds it
    assert cc.remotecall_fetch(lambda: __import__("__main__").held.fetch(), b) == "payload"
    cc.remotecall_fetch(lambda: delattr(__import__("__main__"), "held"), b)
    cc.remotecall_fetch(_settled_table_size, b)  # b's release goes to a ahead of later messages
    assert owner_table_size(a) == before


def test_future_sent_back_to_its_owner(shared_workers: list[int]) -> None:
    a = shared_workers[0]
    before = owner_table_size(a)
    fut = cc.remotecall(lambda: 10, a)
    fut.wait()
    assert cc.remotecall_fetch(lambda f: f.fetch() + 1, a, fut) == 11
    del fut
    assert owner_table_size(a) == before


def test_driver_owned_future_shared_with_workers() -> None:
    before = owner_table_size(1)
    fut = cc.Future()
    fut.put(5)
    assert owner_table_size(1) == before + 1
    del fut
    assert owner_table_size(1) == before


def test_fetch_of_a_failed_call_raises_every_time(shared_workers: list[int]) -> None:
    fut = cc.remotecall(lambda: [][1], shared_workers[0])
    for _ in range(2):
        with pytest.raises(cc.RemoteException) as info:
            fut.fetch()
        assert isinstance(info.value.captured.ex, IndexError)


def test_isready_does_not_block(shared_workers: list[int]) -> None:
    gate = cc.Future(1)
    fut = cc.remotecall(lambda g: g.fetch(), shared_workers[0], gate)
    started = time.monotonic()
    assert not fut.isready()
    assert time.monotonic() - started < 5
    gate.put(1)
    assert fut.fetch() == 1


def test_waiter_ids_are_released(shared_workers: list[int]) -> None:
    for _ in range(50):
        cc.remotecall_fetch(int, shared_workers[0], 1)
    conn = cluster.worker_from_id(shared_workers[0]).conn
    assert conn is not None and conn.waiters == {}
