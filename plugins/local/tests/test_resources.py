"""What local workers cost the driver, and what happens at the machine's limits.

Most of these run a driver of their own (a subprocess), so that what it holds
is its workers' and nothing a previous test left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import clustercore as cc
from clustercore.testing import watch_worker_output, worker_output

# Helpers the drivers below use: what this process holds.
_PROBES = """
import json, os, threading, time
import clustercore as cc

def descriptors():
    return len(os.listdir("/proc/self/fd"))

def threads():
    # pool threads ("clustercore-thread") stay a while after their last task, to be reused
    names = [t.name for t in threading.enumerate()]
    return sorted(n for n in names if n != "clustercore-thread"), names.count("clustercore-thread")

def descendants(pid=None):
    pid = pid or os.getpid()
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += [int(c) for c in open(f"/proc/{pid}/task/{task}/children").read().split()]
        except OSError:
            pass
    return found + [d for c in found for d in descendants(c)]

def settled(probe, want, timeout=15):
    # output threads end, and workers exit, a moment after rmprocs returns
    deadline = time.monotonic() + timeout
    while (got := probe()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got
"""


def _drive(body: str, timeout: float = 120) -> dict[str, object]:
    """Run ``body`` in a fresh driver; it ends by printing one JSON line, returned here."""
    script = _PROBES + textwrap.dedent(body)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_batch_of_400_workers_starts_and_holds_two_descriptors_each() -> None:
    # One request asks the fork server for the whole batch and the driver only reads until
    # every answer is in: 400 (which once left both sides writing) and more just work.
    # The soft descriptor limit starts too low for them and is raised to the hard one.
    report = _drive("""
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
        cc.rmprocs(cc.addprocs(1))  # the fork server, its relay thread and pipes: not per worker
        before = descriptors()
        started = time.monotonic()
        pids = cc.addprocs(400)
        took = time.monotonic() - started
        held = descriptors() - before
        answers = {cc.remotecall_fetch(os.getpid, p) for p in pids}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        cc.rmprocs(pids)
        print(json.dumps({"pids": len(pids), "answers": len(answers), "held": held, "soft": soft, "hard": hard,
                          "seconds": took}))
    """)
    print(f"addprocs(400) took {report['seconds']:.2f} s; the driver holds {report['held']} descriptors for them")
    assert report["pids"] == report["answers"] == 400
    assert report["held"] <= 2 * 400  # each worker's link and its reader's epoll; output comes on one pipe
    assert report["soft"] == report["hard"]


def test_a_request_past_the_descriptor_limit_fails_first_naming_it() -> None:
    report = _drive("""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        try:
            cc.addprocs(200)
            error = ""
        except OSError as exc:
            error = str(exc)
        print(json.dumps({"error": error, "nprocs": cc.nprocs(), "children": descendants()}))
    """)
    assert "RLIMIT_NOFILE" in report["error"] and "256" in report["error"]  # type: ignore[operator]
    assert report["nprocs"] == 1
    assert report["children"] == []  # not even the fork server was started


def test_a_fork_server_at_its_limit_stops_the_batch_naming_it() -> None:
    report = _drive("""
        import resource
        from clustercore_local import forkserver
        first = cc.addprocs(1)
        server = next(iter(forkserver._servers.values())).process.pid
        resource.prlimit(server, resource.RLIMIT_NOFILE, (64, 64))  # it holds one per worker
        try:
            cc.addprocs(100)
            error = ""
        except OSError as exc:
            error = str(exc)
        left = settled(lambda: len(descendants(server)), 1)
        more = cc.addprocs(2)  # the server serves on
        print(json.dumps({"error": error, "left": left, "procs": cc.procs(), "first": first, "more": more}))
    """)
    assert "fork server" in report["error"] and "RLIMIT_NOFILE is 64" in report["error"]  # type: ignore[operator]
    assert report["left"] == 1  # the workers of the stopped batch were removed
    assert report["procs"] == [1, *report["first"], *report["more"]]  # type: ignore[misc]


def test_a_request_the_machine_cannot_hold_fails_naming_the_limit() -> None:
    with pytest.raises(OSError, match=r"MemAvailable|pid_max|threads-max"):
        cc.addprocs(10_000_000)
    assert cc.nprocs() == 1


def test_adding_and_removing_workers_leaves_nothing_behind() -> None:
    # After warm-up cycles (the fork server, its relay thread and pipes, the pool's first
    # threads), 50 more cycles gain no descriptor, no process, and no thread but pool
    # threads, which are reused (a leak of one per cycle would be 50 more) and retire
    # after a minute idle.
    report = _drive("""
        for _ in range(3):
            cc.rmprocs(cc.addprocs(2))
        time.sleep(0.5)
        base = {"descriptors": descriptors(), "threads": threads()[0], "descendants": len(descendants())}
        pool = threads()[1]
        for _ in range(50):
            cc.rmprocs(cc.addprocs(2))
        after = {
            "descriptors": settled(descriptors, base["descriptors"]),
            "threads": settled(lambda: threads()[0], base["threads"]),
            "descendants": settled(lambda: len(descendants()), base["descendants"]),
        }
        print(json.dumps({"base": base, "after": after, "pool": [pool, threads()[1]]}))
    """)
    assert report["after"] == report["base"]
    pool_before, pool_after = report["pool"]  # type: ignore[misc]
    assert pool_after <= pool_before + 2


def test_forked_workers_output_costs_the_driver_no_thread_each() -> None:
    # A thread per worker read each one's output: 1,024 threads at addprocs(1024). The fork
    # server's relay hands lines on, one printer thread prints them, in each worker's order.
    pids = cc.addprocs(3)
    try:
        with worker_output() as out:
            for pid in pids:
                cc.remotecall_fetch(lambda: [print(f"line {i}") for i in range(50)] and None, pid)
            for pid in pids:
                assert out.wait_for(f"From worker {pid}:\tline 49")
            for pid in pids:
                mine = [line for line in out.lines if line.startswith(f"From worker {pid}:\t")]
                assert mine == [f"From worker {pid}:\tline {i}" for i in range(50)]
        names = {t.name for t in threading.enumerate()}
        assert "clustercore-output" in names  # the printer
        assert not names & {f"clustercore-output-{pid}" for pid in pids}  # and no reader of their own
    finally:
        cc.rmprocs(pids, waitfor=30)


def test_one_worker_whose_output_is_not_taken_holds_up_no_other() -> None:
    # Forked workers' output comes through their fork server on one pipe. When the
    # driver's stdout is stuck, a worker that prints a lot is held (its writes wait),
    # and the others' output, their address lines included, still comes.
    stuck = threading.Event()
    lines: list[str] = []
    all_in = threading.Event()  # the forwarding goes on after the worker's call returns
    long_lines = [0]

    def stuck_stdout(text: str) -> None:
        stuck.wait()
        lines.append(text)
        if text.endswith("x" * 999):
            long_lines[0] += 1
            if long_lines[0] == 4000:
                all_in.set()

    with watch_worker_output(stuck_stdout):
        pids = cc.addprocs(1)
        try:
            printing = cc.remotecall(lambda: [print("x" * 999) for _ in range(4000)] and "printed", pids[0])
            time.sleep(1)
            assert not printing.isready()  # 4 MB: held, waiting to write
            pids += cc.addprocs(2)
            assert cc.remotecall_fetch(lambda: cc.myid(), pids[2]) == pids[2]
            stuck.set()
            assert printing.fetch() == "printed"
        finally:
            stuck.set()
            all_in.wait(60)
            cc.rmprocs(pids)
    assert sum(1 for line in lines if line.endswith("x" * 999)) == 4000


def test_workers_import_modules_from_the_drivers_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As Julia's workers share the driver's project: a directory the driver imports from
    # (its script's, PYTHONPATH's, one it added) is on its local workers' path too.
    (tmp_path / "cc_nearby.py").write_text("def where():\n    import os\n    return os.getpid()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cc_nearby  # type: ignore[import-not-found]

    pids = cc.addprocs(1) + cc.addprocs(1, start_method="spawn")
    try:
        for pid in pids:
            assert cc.remotecall_fetch(cc_nearby.where, pid) == cc.remotecall_fetch(os.getpid, pid)
    finally:
        cc.rmprocs(pids)
