"""Calls from many threads at once: each case here once hung for good.

The randomized search for more of them is :mod:`tests.torture`; these are the
cases it (or a user) found, kept as plain tests. Every wait is bounded, so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import clustercore as cc

DEADLINE = 10.0


def echo(x: Any) -> Any:
    return x


def run_threads(n: int, body: Callable[[int], None]) -> None:
    """Run ``body(i)`` on ``n`` threads; fail (rather than hang) if any is still running
    after ``DEADLINE`` seconds, and re-raise the first failure."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            body(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + DEADLINE
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"calls from {n} threads still running after {DEADLINE:g} s"
    if errors:
        raise errors[0]


@pytest.mark.parametrize(
    ("nthreads", "size"),
    [(3, 1_600_000), (16, 64 * 1024), (8, 8_000_000), (32, 300_000)],
    ids=["3x1.6MB", "16x64KiB", "8x8MB", "32x300KB"],
)
def test_parallel_sends_of_large_payloads_to_one_worker(two: list[int], nthreads: int, size: int) -> None:
    """Julia's "parallel sends of large arrays from multiple tasks to the same remote worker".

    Both ends wrote at once while nobody on either side read: the caller holding the
    link's read right waited for its socket, the worker's replies for theirs.
    """
    target = two[-1]

    def send(i: int) -> None:
        for _ in range(3):
            blob = os.urandom(size)
            assert cc.remotecall_fetch(echo, target, blob) == blob
            array = np.frombuffer(blob, dtype=np.uint8)
            assert np.array_equal(cc.fetch(cc.remotecall(echo, target, array)), array)

    run_threads(nthreads, send)
    cc.rmprocs(two, waitfor=30)  # the workers can still be removed


def sends_from_threads(target: int, nthreads: int, size: int) -> int:
    """On a worker: ``nthreads`` threads echo ``size`` bytes off ``target`` at once."""
    done = []

    def send() -> None:
        blob = os.urandom(size)
        for _ in range(3):
            assert cc.remotecall_fetch(echo, target, blob) == blob
        done.append(1)

    threads = [threading.Thread(target=send) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE)
    return len(done)


def test_parallel_sends_between_workers_and_to_the_driver(fresh: None) -> None:
    a, b = cc.addprocs(2)
    for target in (b, 1):  # worker to worker, worker to driver
        assert cc.remotecall_fetch(sends_from_threads, a, target, 6, 1_600_000) == 6


def test_a_call_that_calls_back_after_its_link_got_a_new_leader(two: list[int]) -> None:
    """A worker's reader runs a call inline; when it is slow another thread takes over
    reading. The first thread, done, mistook the new leader's call for its own and went
    on reading, so the watchdog no longer knew the new leader was busy, and that call's
    message back to the driver (held while more frames were buffered) never left."""
    p = two[0]
    for i in range(100):
        fut = cc.Future()
        cc.remote_do(time.sleep, p, 0.003)  # read and run inline; a new leader comes at 2 ms
        cc.remote_do(put_later, p, fut, i)  # the new leader runs this inline, corked
        cc.remote_do(echo, p, None)  # buffered behind it, so the new leader corks
        assert fut.wait(timeout=DEADLINE).fetch() == i


def put_later(fut: Any, value: Any) -> None:
    time.sleep(0.003)
    fut.put(value)


def start_threads_until_interrupted(started: Any, rounds: int) -> str:
    """On a worker: start and join threads, ``rounds`` times, unless interrupted."""
    import threading as threads

    try:
        started.put(True)
        for _ in range(rounds):
            t = threads.Thread(target=int)
            t.start()
            t.join()
    except KeyboardInterrupt:
        return "interrupted"
    return "finished"


def test_interrupting_a_call_that_starts_threads_never_hangs_it(two: list[int]) -> None:
    """A new thread carries its creator's id until it runs, and an interrupt aimed at the
    creator then killed the new thread, so the creator waited for it forever. interrupt()
    now waits while any thread is being started."""
    p = two[0]
    for _ in range(20):
        started = cc.Future()
        fut = cc.remotecall(start_threads_until_interrupted, p, started, 100_000)
        started.wait(timeout=DEADLINE)
        cc.interrupt(p)
        assert fut.wait(timeout=DEADLINE).fetch() in ("interrupted", "finished")


def summary_of(a: Any) -> tuple[float, float]:
    return float(a.min()), float(a.max())


def send_then_overwrite(seq: int) -> tuple[tuple[float, float], int]:
    """On a worker, in a served call: send an array (out of band), then overwrite it."""
    a = np.full(100_000, float(seq))
    fut = cc.remotecall(summary_of, 1, a)
    a[:] = -1.0  # the send has returned: the buffer is the caller's again
    return cc.fetch(fut), seq


def test_a_served_call_may_reuse_its_buffers_once_a_send_returns(two: list[int]) -> None:
    """A reader corks its link to answer several calls in one write; a call it ran inline
    had its sends held in that cork, so they returned before the array was written."""
    p = two[0]
    for _ in range(10):
        futures = [cc.remotecall(send_then_overwrite, p, i) for i in range(8)]
        for fut in futures:
            (lo, hi), seq = cc.fetch(fut.wait(timeout=DEADLINE))
            assert lo == hi == seq


def square(x: int) -> int:
    return x * x


def test_a_done_callback_may_call_the_same_worker(two: list[int]) -> None:
    """Futures of an Executor are settled off the link's reader: a callback that calls the
    worker again waited for a reply that only its own thread could read."""
    p = two[0]
    got: list[int] = []
    done = threading.Event()

    def again(_: Any) -> None:
        got.append(cc.remotecall_fetch(square, p, 3))
        done.set()

    with cc.Executor(cc.WorkerPool([p])) as ex:
        fut = ex.submit(square, 2)
        fut.add_done_callback(again)
        assert fut.result(timeout=DEADLINE) == 4
        assert done.wait(DEADLINE) and got == [9]


CTRL_C_DURING_SENDS = """
import os, signal, sys, time
import numpy as np, clustercore as cc

def size(x):
    return x.nbytes

w = cc.addprocs(1)[0]
big = np.ones(250_000)
rng = np.random.default_rng(int(sys.argv[1]))
signal.signal(signal.SIGALRM, lambda s, f: os.kill(os.getpid(), signal.SIGINT))
interrupted = rounds = 0
end = time.monotonic() + 4

def one_round():
    global rounds
    rounds += 1
    try:
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0, 0.002))
        cc.remotecall(size, w, big)  # Ctrl-C lands anywhere in here
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert cc.remotecall_fetch(size, w, big) == big.nbytes  # the link still works

while True:  # a Ctrl-C may also land between rounds: count it and go on
    try:
        while time.monotonic() < end:
            one_round()
        break
    except KeyboardInterrupt:
        interrupted += 1
assert cc.remotecall_fetch(size, w, big) == big.nbytes
print(f"{rounds} rounds, {interrupted} interrupted", flush=True)
cc.rmprocs(cc.workers(), waitfor=30)
"""


def test_ctrl_c_during_sends_from_the_main_thread_never_breaks_a_link() -> None:
    """Ctrl-C on the driver's main thread at random moments of 2 MB sends: it once cut a
    frame in two (the link hung for good) or broke the send lock. Run in a process of its
    own, as a user's script would be."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_SENDS, "7"], capture_output=True, text=True, timeout=120, check=False
    )
    errors = [block for block in run.stderr.split("Traceback") if "Exception ignored" not in block[-200:]]
    assert run.returncode == 0, run.stdout[-3000:] + "Traceback".join(errors)[-4000:]
    assert "interrupted" in run.stdout
