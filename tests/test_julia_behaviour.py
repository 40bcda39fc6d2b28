"""Behaviours fixed as in Julia's Distributed (its test/distributed_exec.jl, ported where it applies)."""

from __future__ import annotations

import asyncio
import itertools
import queue
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import clustercore as cc

# --- adding workers (first: this test starts with no workers, before shared_workers) ------


class _RecordingManager(cc.ClusterManager):
    def __init__(self) -> None:
        self.launches = 0

    def launch(self, params: dict[str, Any], launched: list[Any], launch_ntfy: Any) -> None:
        self.launches += 1

    def manage(self, id: int, config: Any, op: str) -> None:
        pass


def test_addprocs_with_another_lazy_is_refused_before_launching(fresh: None) -> None:
    """Julia's addprocs_locked: 'Active workers with lazy=false. Cannot set lazy=true'."""
    cc.addprocs(1, lazy=False)
    manager = _RecordingManager()
    with pytest.raises(ValueError, match="lazy"):
        cc.addprocs(manager)  # lazy=True by default
    assert manager.launches == 0
    with pytest.raises(ValueError, match="lazy"):
        cc.addprocs(1, lazy=True)
    assert cc.nprocs() == 2
    assert len(cc.addprocs(1, lazy=False)) == 1
    cc.rmprocs(cc.workers(), waitfor=30)
    assert len(cc.addprocs(1, lazy=True)) == 1  # no workers left: any laziness again


# --- remote exceptions ------------------------------------------------------------------


def _fail() -> None:
    raise RuntimeError("foobar")


WAYS_TO_CALL: dict[str, Callable[[int], Any]] = {
    "remotecall_fetch": lambda pid: cc.remotecall_fetch(_fail, pid),
    "remotecall_wait": lambda pid: cc.remotecall_wait(_fail, pid),
    "wait(remotecall)": lambda pid: cc.wait(cc.remotecall(_fail, pid)),
    "fetch(remotecall)": lambda pid: cc.fetch(cc.remotecall(_fail, pid)),
}


@pytest.mark.parametrize("where", ["other", "me"])
@pytest.mark.parametrize("way", list(WAYS_TO_CALL))
def test_remoteexception_thrown(shared_workers: list[int], where: str, way: str) -> None:
    """Julia's ``test_remoteexception_thrown``, for a worker (id_other) and this process (id_me)."""
    pid = shared_workers[0] if where == "other" else cc.myid()
    with pytest.raises(cc.RemoteException) as info:
        WAYS_TO_CALL[way](pid)
    assert info.value.pid == pid
    assert isinstance(info.value.captured, cc.CapturedException)
    assert type(info.value.captured.ex) is RuntimeError
    assert str(info.value.captured.ex) == "foobar"


def test_wait_on_a_failed_future_raises_each_time(shared_workers: list[int]) -> None:
    fut = cc.remotecall(_fail, shared_workers[0])
    for _ in range(2):
        with pytest.raises(cc.RemoteException):
            fut.wait()
    with pytest.raises(cc.RemoteException):
        fut.fetch()
    with pytest.raises(cc.RemoteException):
        fut.wait()  # once fetched, from the cached outcome


def test_a_pool_gets_its_worker_back_after_a_failed_remotecall(shared_workers: list[int]) -> None:
    for pid in (shared_workers[0], cc.myid()):
        pool = cc.WorkerPool([pid])
        with pytest.raises(cc.RemoteException):
            cc.fetch(cc.remotecall(_fail, pool))
        assert pool.take() == pid  # it came back (take would wait forever otherwise)


class NeedsTwo(Exception):
    """Its ``args`` are not its ``__init__``'s: unpickling it calls ``NeedsTwo("1 and 2")``."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


class HoldsALock(Exception):
    """Cannot be pickled at all."""

    def __init__(self) -> None:
        super().__init__("it holds a lock")
        self.lock = threading.Lock()


def _raise_needs_two() -> None:
    raise NeedsTwo(1, 2)


def _raise_holds_a_lock() -> None:
    raise HoldsALock()


def _raise_from_a_worker_only_module() -> None:
    module = sys.modules.get("worker_only_errors")
    if module is None:
        module = types.ModuleType("worker_only_errors")
        exec("class WorkerOnlyError(Exception):\n    pass\n", module.__dict__)
        sys.modules["worker_only_errors"] = module
    raise module.WorkerOnlyError("only the worker knows this class")


def _raise_local_class() -> None:
    class Local(Exception):
        pass

    raise Local("defined in a function")


@pytest.mark.parametrize(
    ("thrower", "type_name", "message"),
    [
        (_raise_from_a_worker_only_module, "worker_only_errors.WorkerOnlyError", "only the worker knows this class"),
        (_raise_needs_two, f"{__name__}.NeedsTwo", "1 and 2"),
        (_raise_holds_a_lock, f"{__name__}.HoldsALock", "it holds a lock"),
    ],
)
@pytest.mark.parametrize("way", ["remotecall_fetch", "fetch(remotecall)", "remotecall_wait", "pmap"])
def test_an_exception_that_cannot_be_rebuilt_here_keeps_its_name_message_and_traceback(
    shared_workers: list[int], thrower: Callable[[], None], type_name: str, message: str, way: str
) -> None:
    pid = shared_workers[0]
    with pytest.raises(cc.RemoteException) as info:
        if way == "remotecall_fetch":
            cc.remotecall_fetch(thrower, pid)
        elif way == "fetch(remotecall)":
            cc.fetch(cc.remotecall(thrower, pid))
        elif way == "remotecall_wait":
            cc.remotecall_wait(thrower, pid)
        else:
            cc.pmap(lambda _: thrower(), [0], pool=cc.WorkerPool([pid]))
    exc = info.value
    assert exc.pid == pid
    stand_in = exc.captured.ex
    assert isinstance(stand_in, cc.ExceptionStandIn)
    assert (stand_in.type_name, stand_in.message) == (type_name, message)
    assert str(stand_in) == f"{type_name}: {message}"
    assert thrower.__name__ in exc.captured.traceback  # the remote traceback text
    assert str(exc).startswith(f"On worker {pid}:")
    assert message in str(exc)


def test_an_exception_class_defined_in_a_function_is_rebuilt(shared_workers: list[int]) -> None:
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(_raise_local_class, shared_workers[0])
    assert type(info.value.captured.ex).__name__ == "Local"
    assert str(info.value.captured.ex) == "defined in a function"


# --- pmap: on_error, retries ------------------------------------------------------------


def _tuple_or_fail(x: int, bad: int) -> tuple[int, int]:
    if cc.myid() == bad:
        raise RuntimeError("notfoobar")
    return x * 2, cc.myid()


def _even_fails(x: int) -> tuple[int, int]:
    if x % 2 == 0:
        raise RuntimeError("foobar")
    return x * 2, cc.myid()


def _true_on_foobar(e: BaseException) -> bool:
    if str(e) == "foobar":
        return True
    raise e


PMAP_ARGS: list[tuple[str, list[Any]]] = [
    ("distributed", [None, False]),
    ("batch_size", [None, 2]),
    ("on_error", [None, _true_on_foobar]),
    ("retry_delays", [None, [0.001] * 1000]),
    ("retry_check", [None, lambda s, e: (s, str(e).endswith("foobar"))]),
]


@pytest.mark.parametrize("combination", list(itertools.product([0, 1], repeat=len(PMAP_ARGS))))
def test_pmap_keyword_combinations(shared_workers: list[int], combination: tuple[int, ...]) -> None:
    """Julia's ``walk_args``: every combination of pmap's keyword arguments; the worker
    that plays Julia's even pids fails every call in the retry cases."""
    kwargs = {name: values[i] for (name, values), i in zip(PMAP_ARGS, combination, strict=True) if i}
    testw = [1] if kwargs.get("distributed") is False else shared_workers
    bad = shared_workers[0]
    data = range(1, 101)
    if "retry_delays" in kwargs:
        result = cc.pmap(lambda x: _tuple_or_fail(x, bad), data, **kwargs)
        assert [r[0] for r in result] == [2 * x for x in data]
        assert {r[1] for r in result} == {p for p in testw if p != bad}
    elif "on_error" not in kwargs:
        result = cc.pmap(lambda x: (x * 2, cc.myid()), data, **kwargs)
        assert [r[0] for r in result] == [2 * x for x in data]
        assert {r[1] for r in result} == set(testw)
    else:
        result = cc.pmap(_even_fails, data, **kwargs)
        for x, r in zip(data, result, strict=True):
            assert r is True if x % 2 == 0 else (r[0] == 2 * x and r[1] in testw)


def test_pmap_throws_the_first_error(shared_workers: list[int]) -> None:
    with pytest.raises(cc.RemoteException) as info:
        cc.pmap(lambda x: _fail() if x == 50 else x, range(1, 101))
    assert str(info.value.captured.ex) == "foobar"


def test_pmap_on_error_runs_where_f_ran_with_the_original_exception(shared_workers: list[int]) -> None:
    result = cc.pmap(lambda x: 1 / x, [1, 0, 2, 0], on_error=lambda e: (cc.myid(), type(e).__name__))
    assert result[0::2] == [1.0, 0.5]
    for pid, name in result[1::2]:
        assert pid in shared_workers and name == "ZeroDivisionError"
    local = cc.pmap(lambda x: 1 / x, [0], on_error=lambda e: (cc.myid(), type(e).__name__), distributed=False)
    assert local == [(1, "ZeroDivisionError")]


def _attempt_log() -> cc.RemoteChannel:
    return cc.RemoteChannel(lambda: cc.Channel(1000))


def _drain(ch: cc.RemoteChannel) -> list[Any]:
    got = []
    while ch.isready():
        got.append(ch.take())
    return got


def test_pmap_on_error_value_is_the_result_and_is_not_retried(shared_workers: list[int]) -> None:
    attempts = _attempt_log()

    def flaky(x: int) -> int:
        attempts.put(x)
        if x == 3:
            raise ValueError("three")
        return x

    assert cc.pmap(flaky, range(5), on_error=lambda e: -1, retry_delays=[0, 0]) == [0, 1, 2, -1, 4]
    assert sorted(_drain(attempts)) == [0, 1, 2, 3, 4]


def test_pmap_retries_what_on_error_reraises(shared_workers: list[int]) -> None:
    attempts = _attempt_log()

    def flaky(x: int) -> int:
        attempts.put(x)
        if x == 3:
            raise ValueError("three")
        return x

    def on_error(e: BaseException) -> Any:
        raise KeyError(f"on_error saw {type(e).__name__}")

    with pytest.raises(cc.RemoteException) as info:
        cc.pmap(flaky, range(5), on_error=on_error, retry_delays=[0, 0])
    assert isinstance(info.value.captured.ex, KeyError)
    assert "on_error saw ValueError" in str(info.value.captured.ex)
    time.sleep(0.2)  # the other elements may still be running
    assert _drain(attempts).count(3) == 3  # len(retry_delays) + 1 attempts


def test_pmap_retry_check_may_return_a_bare_bool(shared_workers: list[int]) -> None:
    seen: list[type] = []

    def check(state: Any, exc: BaseException) -> bool:
        seen.append(type(exc))
        return False

    with pytest.raises(cc.RemoteException):
        cc.pmap(lambda x: 1 / x, [0], retry_delays=[0, 0], retry_check=check)
    assert seen == [ZeroDivisionError]  # the original exception, as in Julia
    bad = shared_workers[0]
    result = cc.pmap(lambda x: _tuple_or_fail(x, bad), range(10), retry_delays=[0] * 5, retry_check=lambda s, e: True)
    assert [r[0] for r in result] == [2 * x for x in range(10)]


def _lazy_delays(limit: int, drawn: list[int]) -> Iterator[float]:
    for i in itertools.count():
        if i >= limit:
            raise AssertionError(f"pmap read more than {limit} retry delays")
        drawn.append(i)
        yield 0.0


def test_pmap_retry_delays_are_read_lazily(shared_workers: list[int]) -> None:
    bad = shared_workers[0]
    drawn: list[int] = []
    result = cc.pmap(lambda x: _tuple_or_fail(x, bad), range(50), retry_delays=_lazy_delays(1000, drawn))
    assert [r[0] for r in result] == [2 * x for x in range(50)]
    assert 1 <= len(drawn) <= 2  # one retry each suffices: it goes to the other worker
    assert cc.pmap(lambda x: _tuple_or_fail(x, bad)[0], range(10), retry_delays=itertools.count()) == [
        2 * x for x in range(10)
    ]


def test_pmap_bad_retry_delays_from_an_iterator_raise_when_read(shared_workers: list[int]) -> None:
    with pytest.raises(ValueError, match="retry_delays"):
        cc.pmap(lambda x: 1 / x, [0], retry_delays=iter([-1.0]))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pmap_retries_go_to_another_worker(shared_workers: list[int], batch_size: int) -> None:
    """With one of two workers failing every call, one retry per element is enough."""
    bad = shared_workers[0]

    def work(x: int) -> tuple[int, int]:
        time.sleep(0.002)  # the good worker stays busy: the bad one is always the least loaded
        return _tuple_or_fail(x, bad)

    result = cc.pmap(work, range(200), retry_delays=[0.001], batch_size=batch_size)
    assert [r[0] for r in result] == [2 * x for x in range(200)]
    assert {r[1] for r in result} == {shared_workers[1]}


# --- pools ------------------------------------------------------------------------------


def test_pmap_on_a_worker_uses_every_worker(shared_workers: list[int]) -> None:
    """Julia: 'Test same behaviour when executed on a worker', default and explicit pools."""
    pid = shared_workers[0]

    def used(pool: Any) -> list[int]:
        return sorted(set(cc.pmap(lambda _: (time.sleep(0.005), cc.myid())[1], range(100), pool=pool)))

    assert cc.remotecall_fetch(lambda: sorted(cc.default_worker_pool().workers), pid) == shared_workers
    assert cc.remotecall_fetch(used, pid, None) == shared_workers
    assert cc.remotecall_fetch(used, pid, cc.WorkerPool(shared_workers)) == shared_workers


class QueuePool(cc.AbstractWorkerPool):
    """A user's pool built only on the documented methods."""

    def __init__(self, pids: list[int]) -> None:
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._pids: set[int] = set()
        for pid in pids:
            self.push(pid)

    def push(self, pid: int) -> None:
        self._pids.add(pid)
        self._free.put(pid)

    def put(self, pid: int) -> None:
        self._free.put(pid)

    def take(self) -> int:
        return self._free.get()

    def __len__(self) -> int:
        return len(self._pids)

    def isready(self) -> bool:
        return not self._free.empty()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pmap_over_a_users_pool(shared_workers: list[int], batch_size: int) -> None:
    pool = QueuePool(shared_workers)
    result = cc.pmap(lambda x: (x * 2, cc.myid()), pool, range(60), batch_size=batch_size)
    assert [r[0] for r in result] == [2 * x for x in range(60)]
    assert {r[1] for r in result} <= set(shared_workers)
    assert len(pool) == 2 and pool.isready()
    taken = {pool.take(), pool.take()}  # every worker came back
    assert taken == set(shared_workers)
    for pid in taken:
        pool.put(pid)
    assert cc.pmap(lambda x: 1 / x, pool, [0, 1], on_error=lambda e: type(e).__name__) == ["ZeroDivisionError", 1.0]


# --- everywhere -------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["worker first", "driver first"])
def test_everywhere_reports_every_failure(shared_workers: list[int], order: str) -> None:
    """Julia's ``test_throw_on([p, myid()], ...)``: each process's failure, the driver's too."""
    p = shared_workers[0]
    procs = [p, 1] if order == "worker first" else [1, p]
    with pytest.raises(ExceptionGroup) as info:
        cc.everywhere("raise RuntimeError('everywhere on myid and p')", procs=procs)
    errors = info.value.exceptions
    assert sorted(e.pid for e in errors) == [1, p]  # type: ignore[attr-defined]
    for e in errors:
        assert isinstance(e, cc.RemoteException)
        assert str(e.captured.ex) == "everywhere on myid and p"


def test_everywhere_runs_on_the_others_when_the_driver_fails(shared_workers: list[int]) -> None:
    p = shared_workers[0]
    with pytest.raises(ExceptionGroup):
        cc.everywhere("import clustercore\nreached = 1\nif clustercore.myid() == 1: raise RuntimeError", procs=[1, p])
    assert cc.remotecall_fetch(lambda: __import__("__main__").reached, p) == 1


def test_everywhere_takes_a_bare_pid(shared_workers: list[int]) -> None:
    p, q = shared_workers
    cc.everywhere("defined_on_p = 1", procs=p)
    assert cc.remotecall_fetch(lambda: hasattr(__import__("__main__"), "defined_on_p"), p)
    assert not cc.remotecall_fetch(lambda: hasattr(__import__("__main__"), "defined_on_p"), q)
    with pytest.raises(ExceptionGroup) as info:
        cc.everywhere("raise RuntimeError('everywhere on p')", procs=p)
    assert [e.pid for e in info.value.exceptions] == [p]  # type: ignore[attr-defined]
    cc.everywhere("del defined_on_p", procs=p)


# --- futures ----------------------------------------------------------------------------


def test_repr_says_ready_after_wait(shared_workers: list[int]) -> None:
    for pid in (shared_workers[0], cc.myid()):
        fut = cc.remotecall(time.sleep, pid, 0.01)
        fut.wait()
        assert "ready" in repr(fut)


@pytest.mark.parametrize("where", ["other", "me"])
def test_cancelling_an_await_releases_its_thread_at_once(shared_workers: list[int], where: str) -> None:
    pid = shared_workers[0] if where == "other" else cc.myid()
    fut = cc.remotecall(time.sleep, pid, 2)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fut, 0.1)

    started = time.monotonic()
    asyncio.run(main())  # it would wait for a thread still blocked in fetch
    assert time.monotonic() - started < 1.5
    assert fut.fetch() is None  # the Future itself is still good


def test_await_gives_the_value_or_the_remote_exception(shared_workers: list[int]) -> None:
    async def main(pid: int) -> None:
        assert await cc.remotecall(lambda: 42, pid) == 42
        with pytest.raises(cc.RemoteException):
            await cc.remotecall(_fail, pid)
        done = cc.remotecall(lambda: "done", pid)
        done.wait()
        assert await asyncio.gather(done, cc.remotecall(lambda: 2, pid)) == ["done", 2]

    for pid in (shared_workers[0], cc.myid()):
        asyncio.run(main(pid))


# --- channels ---------------------------------------------------------------------------


def _produce(ch: cc.RemoteChannel, n: int) -> int:
    for i in range(n):
        ch.put(i)
    ch.close()
    return n


@pytest.mark.parametrize("size", [0, 1, 32])
def test_worker_fills_and_closes_a_driver_channel_after_earlier_calls(shared_workers: list[int], size: int) -> None:
    """Reported to hang after earlier calls on the same workers (it did, now and then,
    before the leader-promotion fix in callrunner.py)."""
    for _ in range(5):
        for pid in shared_workers:  # earlier traffic of every kind on the same workers
            assert cc.remotecall_fetch(cc.myid, pid) == pid
            assert cc.fetch(cc.remotecall(lambda x: x + 1, pid, 1)) == 2
            cc.remotecall_wait(time.sleep, pid, 0.001)
        assert cc.pmap(lambda x: x, range(50)) == list(range(50))
        cc.everywhere("import math")
        for pid in shared_workers:
            ch = cc.RemoteChannel(lambda: cc.Channel(size))  # owned by pid 1
            fut = cc.remotecall(_produce, pid, ch, 100)
            assert list(ch) == list(range(100))
            assert fut.fetch() == 100
