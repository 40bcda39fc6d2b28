"""Worker pools, pooled calls, pmap and the Executor."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

import clustercore as cc
from clustercore.errors import InvalidStateError


def test_worker_pool_take_put_push_len(shared_workers: list[int]) -> None:
    pool = cc.WorkerPool(shared_workers)
    assert len(pool) == 2 and pool.isready()
    a = pool.take()
    b = pool.take()
    assert {a, b} == set(shared_workers) and not pool.isready()
    pool.put(a)
    assert pool.take() == a
    pool.put(a)
    pool.put(b)
    assert len(pool) == 2


def test_take_waits_for_a_free_worker(shared_workers: list[int]) -> None:
    pool = cc.WorkerPool([shared_workers[0]])
    pid = pool.take()
    got: list[int] = []
    taker = threading.Thread(target=lambda: got.append(pool.take()))
    taker.start()
    taker.join(0.1)
    assert got == []
    pool.put(pid)
    taker.join(5)
    assert got == [pid]


def test_pooled_calls(shared_workers: list[int]) -> None:
    pool = cc.WorkerPool(shared_workers)
    assert cc.remotecall_fetch(cc.myid, pool) in shared_workers
    fut = cc.remotecall(lambda x: x * 3, pool, 5)
    assert fut.fetch() == 15
    assert cc.remotecall_wait(lambda: 1, pool).fetch() == 1
    cc.remote_do(lambda: None, pool)
    both = {pool.take(), pool.take()}  # every worker came back to the pool after its call
    assert both == set(shared_workers)
    for pid in both:
        pool.put(pid)
    run = cc.remote(lambda x: (cc.myid(), x), pool)
    assert run(3)[1] == 3


def test_a_pool_sent_to_a_worker_is_the_same_pool(shared_workers: list[int]) -> None:
    pool = cc.WorkerPool(shared_workers)
    pid = cc.remotecall_fetch(lambda p: p.take(), shared_workers[0], pool)
    assert pid in shared_workers and len(pool) == 2
    assert pool.take() != pid  # the worker took it from our pool
    assert cc.remotecall_fetch(lambda p: len(p), shared_workers[1], pool) == 2


def test_empty_pool_is_a_clear_error() -> None:
    with pytest.raises(InvalidStateError, match="no active worker"):
        cc.WorkerPool([]).take()


def test_caching_pool_ships_each_function_once(shared_workers: list[int]) -> None:
    pool = cc.CachingPool(shared_workers)
    big = list(range(100_000))

    def uses_big(i: int) -> int:
        return big[i]

    assert cc.pmap(uses_big, pool, range(10)) == list(range(10))
    for _ in range(4):
        assert cc.remotecall_fetch(uses_big, pool, 5) == 5
    assert pool.cached == 2  # one copy per worker
    cc.clear(pool)
    assert pool.cached == 0
    with pytest.raises(TypeError, match="cannot be sent"):
        cc.remotecall_fetch(lambda p: p, shared_workers[0], pool)


def test_pmap_order_and_several_iterables(shared_workers: list[int]) -> None:
    assert cc.pmap(lambda x: x * x, range(100)) == [x * x for x in range(100)]
    assert cc.pmap(lambda a, b: a - b, [5, 6, 7], [1, 1, 1]) == [4, 5, 6]
    assert cc.pmap(lambda x: x, []) == []
    pids = cc.pmap(lambda _: cc.myid(), range(40), batch_size=1)
    assert set(pids) == set(shared_workers)


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_pmap_batch_sizes(shared_workers: list[int], batch_size: int | str) -> None:
    assert cc.pmap(lambda x: x + 1, range(1000), batch_size=batch_size) == list(range(1, 1001))


def test_pmap_on_error_of_batches_runs_on_the_caller(shared_workers: list[int]) -> None:
    """With ``batch_size > 1``; with 1 it runs on the worker (tests/test_julia_behaviour.py)."""
    seen: list[int] = []

    def handler(exc: BaseException) -> str:
        seen.append(cc.myid())
        assert isinstance(exc, ZeroDivisionError)  # the original, as in Julia
        return "bad"

    result = cc.pmap(lambda x: 1 / x, [1, 0, 2, 0], on_error=handler, batch_size=4)
    assert result == [1.0, "bad", 0.5, "bad"]
    assert seen == [1, 1]
    with pytest.raises(cc.RemoteException):
        cc.pmap(lambda x: 1 / x, [1, 0])


def test_pmap_retries_then_gives_up(shared_workers: list[int]) -> None:
    attempts = cc.RemoteChannel(lambda: cc.Channel(100))

    def flaky(x: int) -> int:
        attempts.put(x)
        if x == 3:
            raise ValueError("three always fails")
        return x

    # in batches, on_error runs here once the retries are spent (with batch_size=1 it would
    # handle the first failure on the worker: tests/test_julia_behaviour.py)
    result = cc.pmap(flaky, range(5), retry_delays=[0, 0.01], on_error=lambda e: -1, batch_size=2)
    assert result == [0, 1, 2, -1, 4]
    tried = [attempts.take() for _ in range(7)]
    assert tried.count(3) == 3  # len(retry_delays) + 1 attempts
    assert not attempts.isready()


def test_pmap_retry_check_can_stop_retrying(shared_workers: list[int]) -> None:
    calls = []

    def check(state: object, exc: BaseException) -> tuple[object, bool]:
        calls.append(state)
        return (state or 0) + 1, False

    with pytest.raises(cc.RemoteException):
        cc.pmap(lambda x: 1 / x, [0], retry_delays=[0, 0], retry_check=check)
    assert calls == [None]


def test_pmap_local_threads(shared_workers: list[int]) -> None:
    threads = cc.pmap(lambda _: (cc.myid(), threading.get_ident()), range(8), distributed=False)
    assert {pid for pid, _ in threads} == {1}
    assert cc.pmap(lambda x: 1 / x, [0, 1], distributed=False, on_error=lambda e: None) == [None, 1.0]


def test_pmap_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        cc.pmap(abs, [1], batch_size=0)
    with pytest.raises(ValueError, match="retry_delays"):
        cc.pmap(abs, [1], retry_delays=[-1])
    with pytest.raises(TypeError, match="at least one iterable"):
        cc.pmap(abs)
    with pytest.raises(TypeError, match="callable"):
        cc.pmap(3, [1])


def test_pmap_progress_bar(shared_workers: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    assert cc.pmap(lambda x: x, range(20), progress=True) == list(range(20))
    assert "20/20" in capsys.readouterr().err


def test_executor_submit_map_as_completed(shared_workers: list[int]) -> None:
    with cc.Executor() as ex:
        futures = [ex.submit(lambda x, y=0: x + y, i, y=1) for i in range(10)]
        assert sorted(f.result() for f in cf.as_completed(futures)) == list(range(1, 11))
        assert list(ex.map(lambda x: x * 2, range(20))) == [x * 2 for x in range(20)]
        assert list(ex.map(lambda x, y: x + y, range(20), range(20), chunksize=6)) == [2 * x for x in range(20)]
        failing = ex.submit(lambda: 1 / 0)
        cf.wait([failing])
        assert isinstance(failing.exception(), cc.RemoteException)
        assert {ex.submit(cc.myid).result() for _ in range(6)} <= set(shared_workers)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)


def test_executor_on_a_pool_and_cancel(shared_workers: list[int]) -> None:
    ex = cc.Executor(cc.WorkerPool([shared_workers[0]]))
    gate, started = cc.Future(), cc.Future()
    first = ex.submit(lambda g, s: (s.put(True), g.fetch())[1], gate, started)
    started.fetch()  # the first task runs: the only worker is busy
    queued = [ex.submit(abs, -i) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued[1:])
    gate.put("open")
    assert first.result(timeout=30) == "open"
