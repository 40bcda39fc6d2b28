"""Pools and pmap while workers come and go (each test starts with no workers)."""

from __future__ import annotations

import os
import signal
import threading
import time

import clustercore as cc


def test_default_worker_pool_tracks_workers(fresh: None) -> None:
    pool = cc.default_worker_pool()
    a, b = cc.addprocs(2)
    assert pool.workers >= {a, b}
    assert cc.remotecall_fetch(lambda: sorted(cc.default_worker_pool().workers), a) == sorted(pool.workers)
    cc.rmprocs(a)
    assert a not in pool.workers
    assert cc.remotecall_fetch(cc.myid, pool) == b


def test_default_pool_without_workers_uses_pid_1(fresh: None) -> None:
    assert cc.remotecall_fetch(cc.myid, cc.default_worker_pool()) == 1
    assert cc.pmap(lambda x: x + 1, [1, 2]) == [2, 3]


def test_pmap_survives_a_worker_killed_midway(fresh: None) -> None:
    _, victim, _ = cc.addprocs(3)

    def work(x: int) -> int:
        if cc.myid() == victim and x >= 20:  # the victim dies in the middle of the map
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 2

    result = cc.pmap(work, range(200), retry_delays=[0, 0, 0])
    assert result == [x * 2 for x in range(200)]
    assert victim not in cc.workers() and len(cc.workers()) == 2


def test_pmap_on_error_sees_a_dead_worker(fresh: None) -> None:
    cc.addprocs(1)
    result = cc.pmap(
        lambda x: os.kill(os.getpid(), signal.SIGKILL) if x == 2 else x,
        range(4),
        on_error=lambda e: type(e).__name__,
        batch_size=4,
    )
    assert result == ["ProcessExitedException"] * 4


def test_broadcasts_go_out_at_once(fresh: None) -> None:
    pids = cc.addprocs(4)
    started = time.monotonic()
    cc.everywhere(lambda: time.sleep(0.5), procs=pids)
    assert time.monotonic() - started < 1.5  # 4 x 0.5 s one after another would be 2 s


def test_a_running_pmap_gives_work_to_workers_added_meanwhile(fresh: None) -> None:
    # Julia's pmap takes workers from the pool as it goes: one added mid-map gets elements.
    (first,) = cc.addprocs(1)
    gate = cc.RemoteChannel(lambda: cc.Channel(1000))
    started = cc.RemoteChannel(lambda: cc.Channel(1000))

    def work(x: int) -> int:
        started.put(x)
        gate.take()
        return cc.myid()

    results: list[list[int]] = []
    mapper = threading.Thread(target=lambda: results.append(cc.pmap(work, range(80))))
    mapper.start()
    started.take()  # the map is running, on the first worker only
    (second,) = cc.addprocs(1)
    for _ in range(80):
        gate.put(None)
    mapper.join(60)
    assert not mapper.is_alive()
    assert set(results[0]) == {first, second}
