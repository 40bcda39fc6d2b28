"""``status()`` and ``calls_in_flight()`` against real workers: counts, bytes, stuck calls,
and a worker that cannot answer (it holds the GIL in C code), which must not hold the call up."""

from __future__ import annotations

import functools
import os
import signal
import time

import pytest

import clustercore as cc
from clustercore.engine import cluster, requests, sampling
from clustercore.testing import worker_output


def wait_on(ch: cc.RemoteChannel) -> str:
    """A call stuck until the test lets it go (a take on a channel owned by the driver)."""
    return str(cc.take(ch))


def test_status_counts_calls_and_bytes(two: list[int]) -> None:
    before = {row.pid: row for row in cc.status()}
    assert sorted(before) == [1, *two]
    assert before[1].manager == "" and {before[p].manager for p in two} == {"local"}
    payload = b"x" * 100_000
    for _ in range(5):
        assert cc.remotecall_fetch(len, two[0], payload) == 100_000
    with pytest.raises(cc.RemoteException):
        cc.remotecall_fetch(int, two[0], "not a number")
    after = {row.pid: row for row in cc.status()}
    first = after[two[0]]
    assert first.calls_finished - before[two[0]].calls_finished >= 5
    assert first.calls_failed - before[two[0]].calls_failed == 1
    assert first.calls_started >= first.calls_finished + first.calls_failed
    assert first.bytes_in - before[two[0]].bytes_in >= 500_000  # the driver's sends, counted where they arrive
    assert after[1].bytes_out - before[1].bytes_out >= 500_000
    assert first.state == "idle" and first.calls_in_flight == ()
    assert first.rss > 1 << 20 and first.cpu_seconds > 0 and first.threads >= 1
    assert first.ospid == cc.worker_info(two[0]).ospid and first.host == cc.worker_info(two[0]).host


def test_a_stuck_call_shows_with_its_age_and_traceback(two: list[int]) -> None:
    ch = cc.RemoteChannel(lambda: cc.Channel(10), 1)
    stuck = [cc.remotecall(wait_on, two[1], ch) for _ in range(3)]  # more stuck calls than the pool's idle threads
    deadline = time.monotonic() + 30
    while True:
        row = {r.pid: r for r in cc.status()}[two[1]]
        if len(row.calls_in_flight) == 3:
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.05)
    assert row.state == "busy"
    assert {c.function for c in row.calls_in_flight} == {f"{__name__}.wait_on"}
    assert row.oldest_call is row.calls_in_flight[0] and row.oldest_call.age >= 0
    calls = cc.calls_in_flight(two[1])
    assert len(calls) == 3
    for call in calls:
        assert call.pid == two[1] and call.function == f"{__name__}.wait_on"
        assert "in wait_on" in call.traceback and ", in take\n" in call.traceback  # where it waits
        assert "run_work_thunk" not in call.traceback  # the engine's frames are left out
    assert cc.remotecall_fetch(os.getpid, two[1]) == row.ospid  # and the worker still serves calls
    for _ in stuck:
        cc.put(ch, "go")
    assert [cc.fetch(f) for f in stuck] == ["go"] * 3
    assert {r.pid: r for r in cc.status()}[two[1]].state == "idle"


def hold_the_gil() -> int:
    return sum(range(10**12))  # C code that never lets the GIL go: nothing else runs in this process


def test_an_unresponsive_worker_does_not_hold_status_up(two: list[int]) -> None:
    cc.status()  # the worker's numbers, before it stops answering
    ospid = cc.worker_info(two[0]).ospid
    worker = cluster.worker_from_id(two[0])
    cc.remote_do(hold_the_gil, two[0])
    time.sleep(0.2)  # let it start: no event crosses a process that holds its GIL
    try:
        started = time.monotonic()
        rows = {r.pid: r for r in cc.status(timeout=0.5)}
        assert time.monotonic() - started < 20  # the deadline holds (a generous bound: no hang)
        cc.status(timeout=0.1)  # asked again while the first request is unanswered: that one is waited for
        assert [key for key in requests._pending if key[0] == two[0]] == [(two[0], sampling.sample, ())]
        assert rows[two[0]].state == "unresponsive"
        assert rows[two[0]].ospid == ospid and rows[two[0]].rss > 0  # what the driver last heard
        assert rows[two[1]].state == "idle"
        with pytest.raises(TimeoutError, match="kill -USR2"):
            cc.calls_in_flight(two[0], timeout=0.2)
        with worker_output() as output:  # the dump that needs no Python: faulthandler, on SIGUSR2
            os.kill(ospid, signal.SIGUSR2)
            assert output.wait_for("in hold_the_gil", timeout=30), output.lines
    finally:
        os.kill(ospid, signal.SIGKILL)
        assert worker.gone.wait(30)
    assert [r.pid for r in cc.status()] == [1, two[1]]


def _status_here(other: int) -> tuple[str, bool]:
    """On a worker: ``other``'s state in this worker's ``status()``, and whether it has a link to it now."""
    from clustercore.engine.cluster import PGRP

    rows = {r.pid: r for r in cc.status(timeout=5)}
    w = PGRP.workers.get(other)
    return rows[other].state, w is not None and w.conn is not None


def test_status_on_a_worker_asks_only_the_processes_it_has_links_to(two: list[int]) -> None:
    # A worker does not dial a peer to ask it: a dial to a stopped peer waits out its whole
    # handshake deadline, far past the status deadline (40 s for timeout=1 before).
    state, linked = cc.remotecall_fetch(_status_here, two[0], two[1])
    assert (state, linked) == ("unresponsive", False)
    cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), two[0], two[1])  # now linked
    assert cc.remotecall_fetch(_status_here, two[0], two[1]) == ("idle", True)


def test_status_arguments(two: list[int]) -> None:
    with pytest.raises(ValueError):
        cc.status(timeout=0)
    with pytest.raises(ValueError):
        cc.calls_in_flight(10**6)  # a pid no worker ever had


def _fail() -> None:
    raise RuntimeError("failed on purpose")


def test_broadcast_call_waits_for_every_reply_or_until_its_deadline(two: list[int]) -> None:
    everyone = [1, *two]
    assert requests.broadcast_call(cc.myid, everyone) == {pid: pid for pid in everyone}
    with pytest.raises(cc.RemoteException, match="failed on purpose"):
        requests.broadcast_call(_fail, everyone)  # without a deadline a failure is raised
    cc.rmprocs(two[1])
    within = requests.broadcast_call(cc.myid, everyone, timeout=30)  # with one, it is no answer
    assert within == {1: 1, two[0]: two[0], two[1]: None}
    assert requests.broadcast_call(_fail, [1, two[0]], timeout=30) == {1: None, two[0]: None}


def _plus(a: int, b: int) -> int:
    return a + b


def test_broadcast_call_with_a_deadline_takes_any_callable(two: list[int]) -> None:
    add_one = functools.partial(_plus, 1)  # no __qualname__: nothing is made of its name
    for merge in (False, True):
        assert requests.broadcast_call(add_one, [1, two[0]], 2, timeout=30, merge=merge) == {1: 3, two[0]: 3}
    unhashable = [1, 2, 3]  # asked afresh each time: never merged
    assert requests.broadcast_call(len, [1, two[0]], unhashable, timeout=30, merge=True) == {1: 3, two[0]: 3}
    with pytest.raises(ValueError, match="merge=True needs a timeout"):
        requests.broadcast_call(cc.myid, [1], merge=True)


def test_broadcast_call_merges_only_a_request_of_the_same_function(two: list[int]) -> None:
    ch = cc.RemoteChannel(lambda: cc.Channel(1), 1)
    held = lambda: (cc.take(ch), "held")[1]  # noqa: E731
    quick = lambda: "quick"  # noqa: E731
    assert held.__qualname__ == quick.__qualname__  # a name is not what a request is
    try:
        assert requests.broadcast_call(held, [two[0]], timeout=0.2, merge=True) == {two[0]: None}
        assert requests.broadcast_call(quick, [two[0]], timeout=30, merge=True) == {two[0]: "quick"}
        assert [key[1] for key in requests._pending if key[0] == two[0]] == [held]  # still unanswered
    finally:
        cc.put(ch, "go")


LISTENERS = """
import sys
import clustercore.clusterstatus, clustercore.metrics, clustercore.tracing, clustercore.attach, clustercore.top
from clustercore.engine.cluster import PGRP

def registered():
    listeners = PGRP.joined_listeners + PGRP.left_listeners
    return sorted(f"{f.__module__}.{f.__name__}" for f in listeners if f.__module__.startswith("clustercore."))

print(registered())
for _ in range(2):  # each feature registers as it is first used, and only once
    import clustercore as cc
    cc.status()
    with cc.trace():
        pass
    clustercore.metrics.metrics_text()
print(registered())
"""


def test_importing_the_views_registers_nothing_until_they_are_used() -> None:
    import subprocess
    import sys
    from ast import literal_eval

    done = subprocess.run([sys.executable, "-c", LISTENERS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert not [name for name in literal_eval(before) if name.split(".")[1] in ("clusterstatus", "metrics", "tracing")]
    assert sorted(set(literal_eval(after)) - set(literal_eval(before))) == [
        "clustercore.clusterstatus.forget",
        "clustercore.metrics._worker_joined",
        "clustercore.metrics._worker_left",
        "clustercore.tracing._worker_joined",
    ]
    assert len(literal_eval(after)) == len(literal_eval(before)) + 4
