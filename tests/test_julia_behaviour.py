"""Behaviours fixed as in Julia's Distributed (its test/distributed_exec.jl, ported where it applies)."""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import pytest

import clustercore as cc

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
