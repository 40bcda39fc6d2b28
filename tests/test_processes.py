"""Adding, removing, interrupting and losing workers (real local processes)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import clustercore as cc
from clustercore.engine import cluster
from clustercore.testing import pid_alive, running_driver, wait_until_gone, worker_output


def test_no_workers_yet(fresh: None) -> None:
    assert cc.myid() == 1
    assert cc.procs() == [1]
    assert cc.workers() == [1]
    assert cc.nprocs() == 1
    assert cc.nworkers() == 1


def test_addprocs_returns_new_pids_ascending_never_reused(fresh: None) -> None:
    first = cc.addprocs(2)
    assert first == sorted(first) and len(first) == 2
    assert cc.workers() == first and cc.nprocs() == 3 and cc.nworkers() == 2
    cc.rmprocs(first[0])
    assert cc.workers() == [first[1]]
    second = cc.addprocs(1)
    assert second[0] > first[1]
    assert cc.procs() == [1, first[1], second[0]]


def test_a_joining_thread_takes_the_next_worker_waiting(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread per worker cost addprocs(1024) a thousand thread starts: a joining thread
    # done with one worker takes the next one waiting, and at most _AT_ONCE run.
    from clustercore import processes

    joined_on: list[threading.Thread] = []  # kept: their ids stay theirs
    started = [0]
    changed = threading.Condition()
    real_start, real_join = processes._Joining.start, processes._Joining._join

    def start(self: processes._Joining, config: object) -> None:
        real_start(self, config)  # type: ignore[arg-type]
        with changed:
            started[0] += 1
            changed.notify_all()

    def join(self: processes._Joining, config: object, pid: int) -> None:
        with changed:
            joined_on.append(threading.current_thread())
        real_join(self, config, pid)  # type: ignore[arg-type]
        with changed:  # the next worker is waiting before this thread looks for one
            changed.wait_for(lambda: started[0] >= min(7, len(joined_on) + 1), timeout=60)

    monkeypatch.setattr(processes._Joining, "_AT_ONCE", 2)
    monkeypatch.setattr(processes._Joining, "start", start)
    monkeypatch.setattr(processes._Joining, "_join", join)
    pids = cc.addprocs(7)
    try:
        assert len(pids) == 7 and len(joined_on) == 7
        assert len({id(t) for t in joined_on}) == 2
        assert cc.remotecall_fetch(cc.myid, pids[-1]) == pids[-1]
    finally:
        cc.rmprocs(pids, waitfor=30)


def test_a_worker_that_dies_during_its_launch_is_in_no_new_workers_procs(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first of four joins, then dies before the others join: those that join later
    # never hear it left (they were not there), so the batch's table must not name it.
    from clustercore import processes

    real_join = processes._Joining._join
    died: list[int] = []

    def join(self: processes._Joining, config: object, pid: int) -> None:
        real_join(self, config, pid)  # type: ignore[arg-type]
        if not died:
            w = cluster.PGRP.workers[pid]
            died.append(pid)
            os.kill(w.ospid, signal.SIGKILL)
            assert w.gone.wait(30)  # pid 1 has forgotten it before the next worker joins

    monkeypatch.setattr(processes._Joining, "_AT_ONCE", 1)
    monkeypatch.setattr(processes._Joining, "_join", join)
    pids = cc.addprocs(4)
    alive = [p for p in pids if p not in died]
    assert len(alive) == 3 and died[0] not in cc.procs()
    for pid in alive:
        assert cc.remotecall_fetch(cc.procs, pid) == [1, *alive]


def test_addprocs_by_manager_name_and_instance(fresh: None) -> None:
    from clustercore_local import LocalManager

    by_name = cc.addprocs("local", np=1, restrict=True)
    by_instance = cc.addprocs(LocalManager(np=1))
    assert len(by_name) == len(by_instance) == 1
    assert cc.remotecall_fetch(cc.myid, by_instance[0]) == by_instance[0]


def test_addprocs_rejects_bad_input_before_launching(fresh: None) -> None:
    with pytest.raises(ValueError, match="positive"):
        cc.addprocs(0)
    with pytest.raises(TypeError, match="manager name"):
        cc.addprocs(2.5)
    with pytest.raises(ValueError, match="no cluster manager named 'nope'"):
        cc.addprocs("nope")
    with pytest.raises(TypeError, match="unexpected keyword arguments: colour"):
        cc.addprocs(1, colour="red")
    with pytest.raises(ValueError, match="topology"):
        cc.addprocs(1, topology="ring")
    assert cc.procs() == [1]


def test_addprocs_options_reach_the_worker(fresh: None, tmp_path: os.PathLike[str]) -> None:
    (pid,) = cc.addprocs(1, dir=str(tmp_path), env={"CC_TEST_VAR": "hello"}, exeflags=["-X", "utf8"])
    assert cc.remotecall_fetch(os.getcwd, pid) == str(tmp_path)
    assert cc.remotecall_fetch(lambda: os.environ.get("CC_TEST_VAR"), pid) == "hello"
    assert cc.remotecall_fetch(lambda: sys.flags.utf8_mode, pid) == 1
    assert cc.remotecall_fetch(lambda: os.environ.get("OPENBLAS_NUM_THREADS"), pid) == "1"


def test_procs_of_a_pid_groups_by_host(two: list[int]) -> None:
    assert cc.procs(two[0]) == [1, *two]
    assert cc.procs(1) == [1, *two]
    with pytest.raises(ValueError):
        cc.procs(10**9)  # no such pid, however many workers the session has made


def test_rmprocs_waitfor_variants(fresh: None) -> None:
    pids = cc.addprocs(3)
    ospids = {p: cc.remotecall_fetch(os.getpid, p) for p in pids}
    handle = cc.rmprocs(pids[0], waitfor=0)
    handle.wait(30)
    assert pids[0] not in cc.procs()
    cc.rmprocs([pids[1]], waitfor=30)
    assert cc.workers() == [pids[2]]
    assert wait_until_gone([ospids[pids[0]], ospids[pids[1]]]) == []
    with pytest.raises(ValueError, match=f"no worker with pid {10**9}"):
        cc.rmprocs(10**9)  # no such pid, however many workers the session has made
    cc.rmprocs(pids[0])  # already removed: nothing to do
    with pytest.raises(cc.ProcessExitedException):
        cc.remotecall_fetch(cc.myid, pids[0])


def test_rmprocs_timeout_raises(fresh: None) -> None:
    from clustercore_local import LocalManager

    (pid,) = cc.addprocs(LocalManager(np=1, exit_timeout=30, term_timeout=30))
    ospid = cc.remotecall_fetch(os.getpid, pid)
    cc.remotecall_fetch(lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN), pid)
    cc.remotecall_fetch(lambda: __import__("atexit").register(time.sleep, 60), pid)  # exits slowly
    with pytest.raises(TimeoutError, match="not removed within"):
        cc.rmprocs(pid, waitfor=0.5)
    os.kill(ospid, signal.SIGKILL)  # end it now rather than after the ladder's 60 s
    assert wait_until_gone([ospid]) == []


def test_interrupt_stops_only_the_call_in_flight(two: list[int]) -> None:
    w = two[0]
    sleeping = cc.remotecall(time.sleep, w, 60)
    started = time.monotonic()
    while not cc.remotecall_fetch(lambda: bool(cluster.PGRP.runner.in_user_code), w):
        time.sleep(0.01)  # wait until the sleep has started on the worker
    cc.interrupt(w)
    with pytest.raises(cc.RemoteException) as info:
        sleeping.fetch()
    assert isinstance(info.value.captured.ex, KeyboardInterrupt)
    assert time.monotonic() - started < 30
    assert cc.remotecall_fetch(lambda: "still serving", w) == "still serving"
    assert cc.remotecall_fetch(cc.myid, two[1]) == two[1]  # the other worker was not touched


def test_interrupt_reaches_python_code_on_a_secondary_thread(two: list[int]) -> None:
    w = two[0]
    gate = cc.Future(1)
    cc.remotecall(lambda g: cc.fetch(g), w, gate)  # keeps the main thread busy

    def spin() -> int:
        n = 0
        while True:
            n += 1

    spinning = cc.remotecall(spin, w)
    while cc.remotecall_fetch(lambda: len(cluster.PGRP.runner.in_user_code), w) < 2:
        time.sleep(0.01)
    cc.interrupt(w)
    with pytest.raises(cc.RemoteException) as info:
        spinning.fetch()
    assert isinstance(info.value.captured.ex, KeyboardInterrupt)
    gate.put(None)
    assert cc.remotecall_fetch(lambda: 3, w) == 3


def test_a_worker_killed_mid_call_releases_every_waiter(two: list[int]) -> None:
    w = two[0]
    ospid = cc.remotecall_fetch(os.getpid, w)
    pending = [cc.remotecall(time.sleep, w, 60) for _ in range(3)]
    other = cc.remotecall(lambda other: cc.remotecall_fetch(time.sleep, other, 60), two[1], w)
    os.kill(ospid, signal.SIGKILL)
    started = time.monotonic()
    for fut in pending:
        with pytest.raises(cc.ProcessExitedException) as info:
            fut.fetch()
        assert info.value.worker_id == w
    with pytest.raises(cc.RemoteException) as info2:
        other.fetch()  # the worker-to-worker waiter on the other worker fails too
    assert isinstance(info2.value.captured.ex, cc.ProcessExitedException)
    assert time.monotonic() - started < 5
    assert w not in cc.procs()
    with pytest.raises(cc.ProcessExitedException):
        cc.remotecall_fetch(cc.myid, w)
    assert cc.remotecall_fetch(cc.myid, two[1]) == two[1]


def test_a_caller_that_finds_its_worker_dead_sees_it_gone(two: list[int]) -> None:
    # The caller reads the end of the link itself: by the time it raises, the
    # worker must already be out of workers(), not left for the link's reader.
    w, other = two
    with pytest.raises(cc.ProcessExitedException) as info:
        cc.remotecall_fetch(lambda: os.kill(os.getpid(), signal.SIGKILL), w)
    assert info.value.worker_id == w
    assert cc.workers() == [other]
    with pytest.raises(cc.ProcessExitedException):
        cc.remotecall_fetch(os.getpid, w)
    assert cc.remotecall_fetch(cc.myid, other) == other


def test_worker_output_is_forwarded_with_its_pid(two: list[int]) -> None:
    w = two[1]
    with worker_output() as out:
        cc.remotecall_fetch(lambda: print("hello from a worker"), w)
        cc.remotecall_fetch(lambda: print("to stderr", file=sys.stderr), w)
        assert out.wait_for(f"From worker {w}:\thello from a worker")
        assert out.wait_for(f"From worker {w}:\tto stderr")


def test_what_a_worker_printed_before_the_driver_exits_is_printed() -> None:
    # The driver's exit removes its workers; the lines they printed before that are still
    # on their way (the fork server's relay, the printer thread): they come out first.
    done = _run_driver(
        """
        import clustercore as cc
        (w,) = cc.addprocs(1)
        cc.remotecall_fetch(lambda: [print(f"line {i}") for i in range(3000)] and None, w)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("From worker")]
    assert lines == [f"From worker 2:\tline {i}" for i in range(3000)]


def _run_driver(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_workers_exit_when_the_driver_is_killed() -> None:
    setup = """
        import os, clustercore as cc
        report = [cc.remotecall_fetch(os.getpid, p) for p in cc.addprocs(2)]
    """
    with running_driver(setup) as (driver, ospids):
        assert len(ospids) == 2 and all(pid_alive(p) for p in ospids)
        driver.kill()
        driver.wait()
        assert wait_until_gone(ospids, timeout=5) == []


def test_driver_exit_removes_workers_cleanly() -> None:
    result = _run_driver("""
        import os, clustercore as cc
        pids = cc.addprocs(2)
        print(*[cc.remotecall_fetch(os.getpid, p) for p in pids])
    """)
    assert result.returncode == 0, result.stderr
    assert wait_until_gone([int(p) for p in result.stdout.split()], timeout=10) == []


def test_worker_exits_when_pid_1_never_joins() -> None:
    env = {**os.environ, "CLUSTERCORE_WORKER_TIMEOUT": "1"}
    worker = subprocess.run(
        [sys.executable, "-m", "clustercore", "worker", "--bind-to", "127.0.0.1"],
        input="some-cookie-long-enough-to-pass\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert worker.returncode == 1
    assert worker.stdout.startswith("clustercore_worker:")
    assert "did not connect within 1 s" in worker.stdout + worker.stderr


def test_worker_exits_when_the_link_pid_1_holds_stays_silent() -> None:
    # A worker handed a link (--link-fd, as the Local plugin's workers are) serves its
    # handshake on its main thread: a launcher that never speaks on it is given
    # CLUSTERCORE_WORKER_TIMEOUT, not the handshake's own 20 s.
    import socket

    mine, theirs = socket.socketpair()
    env = {**os.environ, "CLUSTERCORE_WORKER_TIMEOUT": "1"}
    link = str(theirs.fileno())
    command = [sys.executable, "-m", "clustercore", "worker", "--bind-to", "127.0.0.1", "--link-fd", link]
    with mine:
        worker = subprocess.run(
            command,
            input="some-cookie-long-enough-to-pass\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
    assert worker.returncode == 1
    said = worker.stdout + worker.stderr
    assert re.search(r"handshake with .* did not finish within 0\.\d+ s", said)  # what was left of the 1 s
    assert "did not connect within 1 s" in said


def test_worker_exits_when_pid_1_never_joins_and_nobody_reads_its_output() -> None:
    # A driver killed while its workers start: their output pipe has no reader.
    env = {**os.environ, "CLUSTERCORE_WORKER_TIMEOUT": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "clustercore", "worker", "--bind-to", "127.0.0.1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(b"some-cookie-long-enough-to-pass\n")
        worker.stdin.flush()
        assert worker.stdout.readline().startswith(b"clustercore_worker:")
        worker.stdout.close()  # the notice it prints on giving up now fails to write
        assert worker.wait(timeout=30) == 1
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdin.close()  # type: ignore[union-attr]


def test_only_pid_1_adds_or_removes_workers(two: list[int]) -> None:
    with pytest.raises(cc.RemoteException, match="only pid 1 can add workers"):
        cc.remotecall_fetch(lambda: cc.addprocs(1), two[0])
    with pytest.raises(cc.RemoteException, match="only pid 1 can remove workers"):
        cc.remotecall_fetch(lambda p: cc.rmprocs(p), two[0], two[1])


def test_cookie_is_not_on_the_worker_command_line(two: list[int]) -> None:
    cookie = cc.cluster_cookie()
    for w in two:
        ospid = cc.remotecall_fetch(os.getpid, w)
        with open(f"/proc/{ospid}/cmdline", "rb") as f:
            assert cookie.encode() not in f.read()
        with open(f"/proc/{ospid}/environ", "rb") as f:
            assert cookie.encode() not in f.read()


def test_worker_timeout_variable_is_validated(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCORE_WORKER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="CLUSTERCORE_WORKER_TIMEOUT"):
        cc.addprocs(1)


def test_a_driver_holding_references_exits_promptly() -> None:
    """References still alive at interpreter exit must not start threads or hang."""
    result = _run_driver("""
        import clustercore as cc
        pids = cc.addprocs(2)
        kept = [cc.remotecall(lambda: 1, pids[0]), cc.RemoteChannel(pids[1]), cc.WorkerPool(pids)]
        print(cc.pmap(lambda x: x * 2, range(8), progress=True))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 2, 4, 6, 8, 10, 12, 14]"
    assert "Exception ignored" not in result.stderr


def _spin() -> None:
    while True:
        pass


def test_replies_held_by_a_leader_that_hands_the_link_back_are_sent(two: list[int]) -> None:
    # While the worker's main thread runs a blocked call, pooled threads lead its
    # link and write the replies to calls read together in one go; when the main
    # thread takes the link back, what such a thread held must still go out (it
    # once did not, and the next call waited forever). The interleaving is racy:
    # repeat the scenario that showed it.
    w = two[0]
    for _ in range(15):
        gate = cc.Future(1)
        cc.remotecall(lambda g: cc.fetch(g), w, gate)
        spinning = cc.remotecall(_spin, w)
        while cc.remotecall_fetch(lambda: len(cluster.PGRP.runner.in_user_code), w) < 2:
            time.sleep(0.002)
        cc.interrupt(w)
        with pytest.raises(cc.RemoteException):
            spinning.fetch()
        gate.put(None)
        timer = threading.Timer(10, os.kill, (os.getpid(), signal.SIGINT))  # a lost reply must not hang CI
        timer.start()
        try:
            assert cc.remotecall_fetch(abs, w, -3) == 3
        except KeyboardInterrupt:
            pytest.fail("the reply never came (the timer interrupted the wait)")
        finally:
            timer.cancel()


def test_a_link_closed_while_its_caller_reads_ends_its_reader(fresh: None) -> None:
    # The caller holds the read right (the reader's poller disarmed) when another
    # thread removes the worker: the caller raises, and the reader still ends.
    (w,) = cc.addprocs(1)
    conn = cluster.PGRP.workers[w].conn
    assert conn is not None and conn.poller is not None
    remover = threading.Timer(0.2, cc.rmprocs, (w,))
    remover.start()
    try:
        cc.remotecall_fetch(time.sleep, w, 30)
    except cc.ProcessExitedException:
        pass
    else:
        raise AssertionError("expected ProcessExitedException")
    remover.join()
    deadline = time.monotonic() + 5
    while not conn.poller.closed and time.monotonic() < deadline:  # the reader closes it as it ends
        time.sleep(0.01)
    assert conn.poller.closed


def test_a_worker_that_is_pid_1_of_its_namespace_ends_on_sigterm() -> None:
    """In a container the worker is the first process, whom the kernel spares the signals
    it does not handle: deleting its pod must still end it (SIGTERM), not wait for SIGKILL."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a PID namespace")
    worker = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount-proc", sys.executable, "-m", "clustercore", "worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write("a" * 32 + "\n")
        worker.stdin.flush()
        assert worker.stdout.readline().startswith("clustercore_worker:")  # it runs, as pid 1 in there
        with open(f"/proc/{worker.pid}/task/{worker.pid}/children") as f:
            (inside,) = (int(p) for p in f.read().split())
        os.kill(inside, signal.SIGTERM)
        assert worker.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        worker.kill()
        worker.wait(30)
