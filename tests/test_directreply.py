"""A caller that reads its own reply (clustercore/directreply.py), against real workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import clustercore as cc
from clustercore.engine import cluster


def _driver_link(pid: int) -> cluster.Connection:
    conn = cluster.PGRP.workers[pid].conn
    assert conn is not None
    return conn


def test_the_caller_reads_its_reply_itself(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    conn = _driver_link(w)
    assert conn.poller is not None  # the driver's links are polled
    # A link just made may still have its reader awake for the join's last replies (it
    # holds the read right a moment, and a caller then waits for it instead): the
    # property is the steady state's, after a call has gone both ways.
    cc.remotecall_fetch(pow, w, 0, 2)
    before = conn.read_epoch
    assert [cc.remotecall_fetch(pow, w, i, 2) for i in range(50)] == [i * i for i in range(50)]
    assert conn.read_epoch - before == 50  # every reply read by the calling thread


def test_a_call_to_the_driver_read_on_the_way_is_served(shared_workers: list[int]) -> None:
    # While the driver's main thread reads the link for its own reply, the worker
    # calls pid 1: that call must reach the driver's runner, or this never returns.
    w = shared_workers[0]
    assert cc.remotecall_fetch(lambda: cc.remotecall_fetch(lambda: 40, 1) + 2, w) == 42


def test_results_for_other_threads_reach_their_waiters(shared_workers: list[int]) -> None:
    w = shared_workers[1]
    wrong: list[tuple[int, int, object]] = []

    def caller(k: int) -> None:
        for i in range(150):
            got = cc.remotecall_fetch(divmod, w, 1000 * k + i, 7)
            if got != divmod(1000 * k + i, 7):
                wrong.append((k, i, got))

    for _ in range(5):  # a lost wake-up of the link's reader showed in about one round in six
        threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a reply was never read"
    assert wrong == []


def test_errors_arrive_as_remote_exceptions(shared_workers: list[int]) -> None:
    w = shared_workers[0]
    try:
        cc.remotecall_fetch(int, w, "not a number")
    except cc.RemoteException as exc:
        assert exc.pid == w
        assert isinstance(exc.captured.ex, ValueError)
    else:
        raise AssertionError("expected a RemoteException")
    assert cc.remotecall_fetch(int, w, "7") == 7  # and the link reads on


_CTRL_C_DRIVER = """
import os, random, signal, sys, threading, time
import clustercore as cc

cc.addprocs(1)
state = {"done": 0, "interrupted": 0, "inside": False}

def on_sigint(signum, frame):  # KeyboardInterrupt, but only around the call under test
    if state["inside"]:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
stop = threading.Event()

def interrupter():
    rng = random.Random(1)
    while not stop.is_set():
        time.sleep(rng.uniform(0.0002, 0.002))
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupter, daemon=True).start()
while state["done"] < 20000 and state["interrupted"] < 400:
    try:
        state["inside"] = True
        i = state["done"]
        got = cc.remotecall_fetch(divmod, 2, i, 7)
        state["inside"] = False
        if got != divmod(i, 7):
            print("WRONG", i, got, flush=True)
            sys.exit(2)
        state["done"] += 1
    except KeyboardInterrupt:
        state["inside"] = False
        state["interrupted"] += 1
stop.set()
assert cc.remotecall_fetch(divmod, 2, 100, 7) == (14, 2)
print("OK", state["done"], state["interrupted"], flush=True)
"""


def test_ctrl_c_during_calls_never_corrupts_the_link() -> None:
    # SIGINT at random moments of a tight call loop on the driver's main thread:
    # every interrupted call raises KeyboardInterrupt, every other call returns
    # its own value, and the link still works afterwards.
    script = textwrap.dedent(_CTRL_C_DRIVER)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    words = done.stdout.split()
    assert words[0] == "OK", done.stdout
    assert int(words[2]) >= 50  # the interrupts really landed
