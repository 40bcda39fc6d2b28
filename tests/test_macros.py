"""everywhere, clear, distributed_for, sync (Julia's macros as functions)."""

from __future__ import annotations

import sys
import time

import pytest

import clustercore as cc
from clustercore.macros import splitrange


def main_global(name: str) -> object:
    return getattr(sys.modules["__main__"], name, "<unset>")


def test_everywhere_runs_source_everywhere_with_values(shared_workers: list[int]) -> None:
    cc.everywhere("import math\nradius = r * 2\narea = math.pi * radius ** 2", r=1.5)
    for pid in [1, *shared_workers]:
        assert cc.remotecall_fetch(main_global, pid, "radius") == 3.0
    cc.everywhere(lambda: setattr(sys.modules["__main__"], "marker", cc.myid()), procs=shared_workers)
    assert [cc.remotecall_fetch(main_global, p, "marker") for p in shared_workers] == shared_workers
    assert main_global("marker") == "<unset>"


def test_everywhere_failures_are_one_exception_group(shared_workers: list[int]) -> None:
    with pytest.raises(ExceptionGroup) as info:
        cc.everywhere("if __import__('clustercore').myid() != 1: raise KeyError('nope')")
    errors = info.value.exceptions
    assert sorted(e.pid for e in errors) == shared_workers
    assert all(isinstance(e, cc.RemoteException) and isinstance(e.captured.ex, KeyError) for e in errors)
    with pytest.raises(SyntaxError):
        cc.everywhere("def (")


def test_clear_sets_globals_to_none(shared_workers: list[int]) -> None:
    cc.everywhere("big_table = list(range(10))", procs=shared_workers)
    cc.clear("big_table")
    assert [cc.remotecall_fetch(main_global, p, "big_table") for p in shared_workers] == [None, None]
    with pytest.raises(ValueError):
        cc.clear(["not an identifier"])


def test_splitrange_chunks_differ_by_at_most_one() -> None:
    for n in range(0, 30):
        for parts in range(1, 7):
            chunks = splitrange(n, parts)
            sizes = [len(c) for c in chunks]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
            assert [i for c in chunks for i in c] == list(range(n))


def test_distributed_for_with_reducer_in_order(shared_workers: list[int]) -> None:
    assert cc.distributed_for(lambda x: x, range(1, 101), reducer=lambda a, b: a + b) == 5050
    # a non-commutative reducer shows the chunks are combined in iteration order
    assert cc.distributed_for(lambda x: [x], range(10), reducer=lambda a, b: a + b) == list(range(10))
    where = cc.distributed_for(lambda x: {cc.myid()}, range(10), reducer=lambda a, b: a | b)
    assert where == set(shared_workers)


def test_distributed_for_without_reducer_returns_futures(shared_workers: list[int]) -> None:
    out = cc.RemoteChannel(lambda: cc.Channel(100))
    futures = cc.distributed_for(lambda x: out.put(x), range(20))
    assert len(futures) == 2 and all(isinstance(f, cc.Future) for f in futures)
    for f in futures:
        f.wait()
    assert sorted(out.take() for _ in range(20)) == list(range(20))


def test_sync_waits_for_futures_started_inside(shared_workers: list[int]) -> None:
    box = cc.RemoteChannel(lambda: cc.Channel(10))
    started = time.monotonic()
    with cc.sync():
        for p in shared_workers:
            cc.spawnat(p, lambda b: (time.sleep(0.2), b.put(cc.myid())), box)
    assert time.monotonic() - started >= 0.2
    assert sorted(box.take() for _ in shared_workers) == shared_workers


def test_sync_raises_failures_together(shared_workers: list[int]) -> None:
    with pytest.raises(ExceptionGroup) as info:
        with cc.sync():
            cc.remotecall(lambda: 1 / 0, shared_workers[0])
            cc.remotecall(lambda: [][0], shared_workers[1])
            cc.remotecall(lambda: "fine", shared_workers[0])
    assert len(info.value.exceptions) == 2
