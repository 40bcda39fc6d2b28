"""Behaviours fixed as in Julia's Distributed (its test/distributed_exec.jl, ported where it applies)."""

from __future__ import annotations

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
