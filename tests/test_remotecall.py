"""The remote-call family against real local workers (Julia's distributed_exec.jl, ported)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

import clustercore as cc
from clustercore.testing import worker_output

GLOBAL_SCALE = 3


def module_level_double(x: int) -> int:
    return 2 * x


def test_remotecall_fetch_runs_on_the_worker(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    assert cc.remotecall_fetch(os.getpid, w) != os.getpid()
    assert cc.remotecall_fetch(cc.myid, w) == w
    assert cc.remotecall_fetch(module_level_double, w, 21) == 42


def test_kwargs_lambdas_and_closures_travel(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    offset = 10
    assert cc.remotecall_fetch(lambda a, b=0: a + b + offset, w, 1, b=5) == 16
    assert cc.remotecall_fetch(lambda: GLOBAL_SCALE * 2, w) == 6
    assert cc.remotecall_fetch(sorted, w, [3, 1, 2], reverse=True) == [3, 2, 1]


def test_remotecall_returns_a_future(shared_workers: list[int]) -> None:
    fut = cc.remotecall(lambda x: x * x, shared_workers[0], 7)
    assert isinstance(fut, cc.Future)
    assert fut.where == shared_workers[0]
    assert cc.fetch(fut) == 49
    assert fut.fetch() == 49  # cached: no second round trip needed
    assert cc.isready(fut)


def test_remotecall_wait_returns_after_the_call_finished(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    marker = cc.Future(w)
    fut = cc.remotecall_wait(lambda m: m.put("done") and 5, w, marker)
    assert cc.isready(marker)
    assert fut.isready() and fut.fetch() == 5


def test_remotecall_wait_raises_when_the_call_fails(shared_workers: list[int]) -> None:
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_wait(lambda: 1 / 0, shared_workers[0])
    assert isinstance(info.value.captured.ex, ZeroDivisionError)


def test_remote_do_runs_and_returns_nothing(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    box = cc.Future(1)  # owned by the driver; the worker puts into it
    assert cc.remote_do(lambda b: b.put(cc.myid()), w, box) is None
    assert box.fetch() == w


def test_remote_do_errors_go_to_the_worker_stderr(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    with worker_output() as out:
        cc.remote_do(lambda: 1 / 0, w)
        assert out.wait_for(f"From worker {w}:\tZeroDivisionError: division by zero")
        assert out.wait_for(f"From worker {w}:\tError in remote_do on worker {w}")


def test_remote_exception_carries_pid_original_and_traceback(shared_workers: list[int]) -> None:
    w = shared_workers[1]

    def fails() -> None:
        raise KeyError("missing-key")

    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(fails, w)
    exc = info.value
    assert exc.pid == w
    assert isinstance(exc.captured.ex, KeyError)
    assert str(exc).startswith(f"On worker {w}:")
    assert "missing-key" in str(exc) and "in fails" in str(exc)
    with pytest.raises(cc.RemoteException):
        cc.remotecall(fails, w).fetch()


def test_calls_to_self_run_locally_with_the_same_semantics() -> None:
    assert cc.remotecall_fetch(os.getpid, 1) == os.getpid()
    assert cc.remotecall(lambda: 5, 1).fetch() == 5
    assert cc.remotecall_wait(lambda: 6, 1).fetch() == 6
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(lambda: 1 / 0, 1)
    assert info.value.pid == 1 and isinstance(info.value.captured.ex, ZeroDivisionError)
    with pytest.raises(cc.RemoteException):
        cc.fetchfrom(1, lambda: [][0])


def test_spawnat_and_fetchfrom_any_round_robin(shared_workers: list[int]) -> None:
    pids = [cc.spawnat("any", cc.myid).fetch() for _ in range(4)]
    assert sorted(set(pids)) == shared_workers
    assert {cc.fetchfrom("any", cc.myid) for _ in range(4)} == set(shared_workers)
    assert cc.fetchfrom(shared_workers[0], lambda x: x + 1, 1) == 2
    with pytest.raises(ValueError, match="'some'"):
        cc.spawnat("some", cc.myid)


def test_bad_arguments_fail_at_the_call_site(shared_workers: list[int]) -> None:
    unknown = 10**9  # pids grow over a session: a small one may be a live worker by now
    with pytest.raises(ValueError, match=f"no process with pid {unknown}"):
        cc.remotecall_fetch(cc.myid, unknown)
    with pytest.raises(ValueError, match=f"no process with pid {unknown}"):
        cc.remotecall(cc.myid, unknown)
    with pytest.raises(TypeError, match="pid is an int"):
        cc.remotecall_fetch(cc.myid, "2")
    with pytest.raises(TypeError, match="callable"):
        cc.remotecall_fetch(42, shared_workers[0])


def test_a_blocked_call_does_not_stop_the_next(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    gate = cc.Future(1)
    blocked = cc.remotecall(lambda g: cc.fetch(g) * 2, w, gate)
    sleeping = cc.remotecall(time.sleep, w, 0.5)
    assert cc.remotecall_fetch(lambda: "served", w) == "served"
    assert not blocked.isready() and not sleeping.isready()
    gate.put(21)
    assert blocked.fetch() == 42
    assert sleeping.fetch() is None


def test_calls_start_in_the_order_sent(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    cc.remotecall_fetch(lambda: setattr(sys.modules["__main__"], "order_log", []), w)
    futures = [cc.remotecall(lambda i: sys.modules["__main__"].order_log.append(i), w, i) for i in range(200)]
    for fut in futures:
        fut.wait()
    assert cc.remotecall_fetch(lambda: sys.modules["__main__"].order_log, w) == list(range(200))


def test_unpicklable_result_is_a_remote_exception_and_the_worker_lives(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(lambda: threading.Lock(), w)
    assert "could not be pickled" in str(info.value)
    assert cc.remotecall_fetch(lambda: 1, w) == 1
    with pytest.raises(cc.RemoteException, match="could not be pickled"):
        cc.remotecall(lambda: threading.Lock(), w).fetch()


class OnlyOnTheDriver:
    """Unpickling this raises on workers, as would a class missing from their path."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse_on_workers, ())


def _refuse_on_workers() -> OnlyOnTheDriver:
    if cc.myid() != 1:
        raise ModuleNotFoundError("No module named 'only_on_the_driver'")
    return OnlyOnTheDriver()


def test_a_payload_that_fails_to_unpickle_gets_an_error_and_the_link_lives(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    with pytest.raises(cc.RemoteException) as info:
        cc.remotecall_fetch(lambda x: x, w, OnlyOnTheDriver())
    assert isinstance(info.value.captured.ex, ModuleNotFoundError)
    assert "could not be unpickled" in str(info.value)
    with pytest.raises(cc.RemoteException, match="only_on_the_driver"):
        cc.remotecall(lambda x: x, w, OnlyOnTheDriver()).fetch()
    assert cc.remotecall_fetch(lambda: "alive", w) == "alive"


def test_a_result_that_fails_to_unpickle_on_the_driver(shared_workers: list[int]) -> None:
    class Refuses:
        def __reduce__(self) -> tuple[object, tuple[()]]:
            return (_refuse_everywhere, ())

    with pytest.raises(cc.RemoteException, match="could not be unpickled here"):
        cc.remotecall_fetch(lambda: Refuses(), shared_workers[0])
    assert cc.remotecall_fetch(lambda: 2, shared_workers[0]) == 2


def _refuse_everywhere() -> None:
    raise RuntimeError("cannot rebuild")


def test_large_numpy_arrays_and_bytes_round_trip(shared_workers: list[int]) -> None:
    np = pytest.importorskip("numpy")
    w = shared_workers[0]
    array = np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000)
    back = cc.remotecall_fetch(lambda a: a * 2, w, array)
    assert back.shape == array.shape and back.dtype == array.dtype
    assert np.array_equal(back, array * 2)
    blob = os.urandom(5 << 20)
    assert cc.remotecall_fetch(lambda b: (type(b).__name__, len(b), b[:16]), w, blob) == ("bytes", len(blob), blob[:16])
    assert cc.remotecall_fetch(lambda b: b, w, blob) == blob
    fortran = np.asfortranarray(array[:10])
    assert np.array_equal(cc.remotecall_fetch(lambda a: a, w, fortran), fortran)
    sliced = array[::2, ::3]  # not contiguous: goes in band
    assert np.array_equal(cc.remotecall_fetch(lambda a: a, w, sliced), sliced)


def test_worker_to_worker_calls_all_to_all(shared_workers: list[int]) -> None:
    a, b = shared_workers
    assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) == b
    assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), b, a) == a
    assert cc.remotecall_fetch(cc.procs, a) == [1, a, b]
    assert cc.remotecall_fetch(cc.workers, b) == [a, b]
    # a Future owned by one worker, fetched by another
    fut = cc.remotecall(lambda: "from a", a)
    assert cc.remotecall_fetch(lambda f: cc.fetch(f), b, fut) == "from a"
