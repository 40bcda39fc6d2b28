"""The manager conformance suite: one set of behaviours every cluster manager must show.

A plugin's tests subclass :class:`ManagerConformance` and provide the
``make_manager`` fixture (a function ``n -> ClusterManager`` for ``n``
workers); pytest then runs every ``test_*`` below against that manager::

    from clustercore.testing import ManagerConformance

    class TestLocalConformance(ManagerConformance):
        @pytest.fixture
        def make_manager(self):
            return lambda n: LocalManager(np=n)

Override :meth:`process_alive` when workers live where this process cannot
see their pids (another host), and :meth:`bad_manager_arguments` to list
constructor calls that must fail before anything is launched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import clustercore as cc
from clustercore.engine import cluster


def pid_alive(ospid: int) -> bool:
    """Whether a process of this machine runs (a zombie does not)."""
    try:
        with open(f"/proc/{ospid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until_gone(ospids: list[int], timeout: float = 10.0) -> list[int]:
    """The os pids still alive after ``timeout`` seconds.

    It polls /proc: there is no event for the exit of a process that is not
    our child.
    """
    deadline = time.monotonic() + timeout
    alive = [p for p in ospids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


class OutputLog:
    """Forwarded worker output lines, collected as they are printed."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, text: str) -> None:
        with self._changed:
            self.lines.append(text)
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 15.0) -> bool:
        """Whether a line containing ``text`` was printed within ``timeout`` seconds."""
        return self.wait(lambda: any(text in line for line in self.lines), timeout)

    def of(self, pid: int, text: str) -> list[str]:
        """The lines worker ``pid`` printed that contain ``text``."""
        with self._changed:
            return [line for line in self.lines if line.startswith(f"From worker {pid}:\t") and text in line]

    def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Whether ``ready()`` held within ``timeout`` seconds (checked as lines come)."""
        with self._changed:
            return self._changed.wait_for(ready, timeout)


@contextmanager
def worker_output() -> Iterator[OutputLog]:
    """Collect the worker output printed while the block runs (no race with stdout capture)."""
    from .engine import managers

    log = OutputLog()
    managers._output_watchers.append(log)
    try:
        yield log
    finally:
        managers._output_watchers.remove(log)


@contextmanager
def running_driver(setup: str, timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Run a driver script in a process of its own, for tests that kill it.

    ``setup`` is Python source that ends with ``report`` bound to a list of os
    pids; once the driver has printed them, this yields the driver process and
    that list. The driver then sleeps until it is killed (here, at the end).
    """
    script = f"{textwrap.dedent(setup)}\nprint(*report, flush=True)\nimport time\ntime.sleep(600)\n"
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        timer = threading.Timer(timeout, driver.kill)  # a driver that never reports ends the wait
        timer.start()
        try:
            line = driver.stdout.readline()
        finally:
            timer.cancel()
        yield driver, [int(p) for p in line.split()]
    finally:
        driver.kill()
        driver.wait()


def _whereabouts() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _spin_forever() -> None:
    while True:
        pass


class ManagerConformance:
    """Behaviours shared by every manager; subclass it in a plugin's tests."""

    nworkers = 2
    addprocs_kwargs: dict[str, Any] = {}
    exit_timeout = 30.0

    @pytest.fixture
    def make_manager(self) -> Callable[[int], cc.ClusterManager]:
        raise NotImplementedError("provide a make_manager fixture returning n -> ClusterManager")

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        """Calls that must raise ``ValueError``/``TypeError`` before launching anything."""
        return []

    def process_alive(self, hostname: str, ospid: int) -> bool:
        """Whether a worker process still runs; the default sees only this host."""
        if hostname != socket.gethostname():
            pytest.skip("override process_alive to check processes on other hosts")
        return pid_alive(ospid)

    def wait_gone(self, places: list[tuple[str, int]], timeout: float | None = None) -> list[tuple[str, int]]:
        deadline = time.monotonic() + (timeout or self.exit_timeout)
        alive = [p for p in places if self.process_alive(*p)]
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)  # another host's processes: no event to wait on
            alive = [p for p in alive if self.process_alive(*p)]
        return alive

    @pytest.fixture
    def workers(self, make_manager: Callable[[int], cc.ClusterManager]) -> Iterator[list[int]]:
        assert cc.nprocs() == 1, f"workers left over from an earlier test: {cc.workers()}"
        pids = cc.addprocs(make_manager(self.nworkers), **self.addprocs_kwargs)
        places = [cc.remotecall_fetch(_whereabouts, p) for p in pids]
        try:
            yield pids
        finally:
            if cc.nprocs() > 1:
                cc.rmprocs(cc.workers(), waitfor=self.exit_timeout)
            assert self.wait_gone(places) == []

    # --- the behaviours ----------------------------------------------------------------

    def test_adds_workers_with_ascending_pids(self, workers: list[int]) -> None:
        assert len(workers) == self.nworkers
        assert workers == sorted(workers) and workers[0] > 1
        assert cc.workers() == workers
        assert [cc.remotecall_fetch(cc.myid, p) for p in workers] == workers

    def test_calls_and_errors(self, workers: list[int]) -> None:
        w = workers[-1]
        assert cc.remotecall_fetch(lambda x, y=1: x * y, w, 6, y=7) == 42
        with pytest.raises(cc.RemoteException) as info:
            cc.remotecall_fetch(lambda: 1 / 0, w)
        assert info.value.pid == w and str(info.value).startswith(f"On worker {w}:")

    def test_output_is_forwarded_with_the_worker_pid(self, workers: list[int]) -> None:
        w = workers[0]
        with worker_output() as out:
            cc.remotecall_fetch(lambda: print("conformance says hi", flush=True), w)
            assert out.wait_for(f"From worker {w}:\tconformance says hi")

    def test_interrupt_stops_the_call_and_the_worker_lives(self, workers: list[int]) -> None:
        w = workers[0]
        fut = cc.remotecall(_spin_forever, w)
        while not cc.remotecall_fetch(lambda: bool(cluster.PGRP.runner.in_user_code), w):
            time.sleep(0.01)  # until the call runs on the worker
        cc.interrupt(w)
        with pytest.raises(cc.RemoteException) as info:
            fut.fetch()
        assert isinstance(info.value.captured.ex, KeyboardInterrupt)
        assert cc.remotecall_fetch(cc.myid, w) == w

    def test_rmprocs_leaves_no_process(self, workers: list[int]) -> None:
        places = [cc.remotecall_fetch(_whereabouts, p) for p in workers]
        cc.rmprocs(workers, waitfor=self.exit_timeout)
        assert cc.procs() == [1]
        assert self.wait_gone(places) == []

    def test_killed_worker_raises_process_exited(self, workers: list[int]) -> None:
        w = workers[0]
        place = cc.remotecall_fetch(_whereabouts, w)
        pending = cc.remotecall(time.sleep, w, 120)
        cc.remote_do(lambda: os.kill(os.getpid(), signal.SIGKILL), w)
        with pytest.raises(cc.ProcessExitedException):
            pending.fetch()
        assert w not in cc.procs()
        assert self.wait_gone([place]) == []

    def test_worker_to_worker_calls(self, workers: list[int]) -> None:
        if len(workers) < 2:
            pytest.skip("needs two workers")
        a, b = workers[0], workers[-1]
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) == b
        assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), b, a) == a

    def test_bad_arguments_are_rejected_before_launch(self) -> None:
        for bad in self.bad_manager_arguments():
            with pytest.raises((ValueError, TypeError)):
                bad()
        assert cc.procs() == [1]


__all__ = ["ManagerConformance", "OutputLog", "pid_alive", "running_driver", "wait_until_gone", "worker_output"]
