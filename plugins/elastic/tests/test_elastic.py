"""Workers started by hand join a running driver; they come and go."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clustercore_elastic import ElasticManager, listen, managers
from elastic_testing import HandStarted

import clustercore as cc


def _wait_until(condition: object, timeout: float = 30.0) -> bool:
    """Polls: the core offers no event for 'a worker was forgotten' to wait on."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_workers_started_by_hand_join_and_work(manager: ElasticManager, hand: HandStarted) -> None:
    joined: list[int] = []
    manager.on_join = joined.append
    for _ in range(3):
        hand.start(manager.address)
    pids = manager.wait_for(3, timeout=60)
    assert len(pids) == 3 and sorted(joined) == pids == cc.workers()
    assert sorted(cc.pmap(lambda _: cc.myid(), range(30))) != []
    assert set(cc.pmap(lambda _: cc.myid(), range(60), batch_size=1)) <= set(pids)
    ospids = {cc.remotecall_fetch(os.getpid, p) for p in pids}
    assert ospids == {p.pid for p in hand.procs}
    # worker to worker, over the address each printed on its link
    assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(cc.myid, q), pids[0], pids[-1]) == pids[-1]
    with pytest.raises(cc.RemoteException, match="boom"):
        cc.remotecall_fetch(lambda: 1 / 0 if False else (_ for _ in ()).throw(ValueError("boom")), pids[1])


def test_joins_that_arrive_together_all_get_pids(manager: ElasticManager, hand: HandStarted) -> None:
    for _ in range(8):
        hand.start(manager.address)
    pids = manager.wait_for(8, timeout=90)
    assert len(set(pids)) == 8 and cc.workers() == pids
    assert sorted(cc.remotecall_fetch(cc.myid, p) for p in pids) == pids


def test_a_worker_that_leaves_is_forgotten_and_others_keep_working(manager: ElasticManager, hand: HandStarted) -> None:
    for _ in range(2):
        hand.start(manager.address)
    pids = manager.wait_for(2, timeout=60)
    by_ospid = {cc.remotecall_fetch(os.getpid, p): p for p in pids}
    leaving = hand.procs[0]
    gone = by_ospid[leaving.pid]
    leaving.kill()
    with pytest.raises(cc.ProcessExitedException):
        cc.remotecall_fetch(time.sleep, gone, 60)
    assert gone not in cc.workers()
    assert _wait_until(lambda: manager.workers() == [p for p in pids if p != gone])
    assert set(cc.pmap(lambda _: cc.myid(), range(20))) == {p for p in pids if p != gone}
    # a newcomer takes a new pid: pids are never reused
    hand.start(manager.address)
    now = manager.wait_for(2, timeout=60)
    assert max(now) > max(pids)


def test_a_worker_that_removes_itself(manager: ElasticManager, hand: HandStarted) -> None:
    hand.start(manager.address)
    (pid,) = manager.wait_for(1, timeout=60)
    cc.remote_do(os._exit, pid, 0)
    assert hand.procs[0].wait(30) == 0
    assert _wait_until(lambda: pid not in cc.workers() and manager.workers() == [])


def test_rmprocs_ends_the_joined_worker(manager: ElasticManager, hand: HandStarted) -> None:
    hand.start(manager.address)
    (pid,) = manager.wait_for(1, timeout=60)
    cc.rmprocs(pid, waitfor=30)
    assert hand.procs[0].wait(30) == 0
    assert manager.workers() == []


def test_default_pool_and_a_workerpool_grow_as_workers_join(manager: ElasticManager, hand: HandStarted) -> None:
    hand.start(manager.address)
    (first,) = manager.wait_for(1, timeout=60)
    pool = cc.WorkerPool([first])
    manager.on_join = pool.push  # a pool of the user's own that grows with every join
    assert set(cc.pmap(lambda _: cc.myid(), range(10))) == {first}
    hand.start(manager.address)
    hand.start(manager.address)
    pids = manager.wait_for(3, timeout=60)
    assert sorted(pool.workers) == pids
    assert set(cc.pmap(lambda _: cc.myid(), range(90), pool=pool)) == set(pids)
    assert set(cc.pmap(lambda _: cc.myid(), range(90))) == set(pids)  # the default pool


def test_a_running_pmap_picks_up_workers_that_join(manager: ElasticManager, hand: HandStarted) -> None:
    hand.start(manager.address)
    manager.wait_for(1, timeout=60)
    release = cc.RemoteChannel(lambda: cc.Channel(1000))
    results: list[list[int]] = []

    def run() -> None:
        results.append(cc.pmap(lambda _: (release.take(), cc.myid())[1], range(60)))

    mapper = threading.Thread(target=run)
    mapper.start()
    hand.start(manager.address)
    pids = manager.wait_for(2, timeout=60)
    for _ in range(60):
        release.put(None)
    mapper.join(60)
    assert set(results[0]) == set(pids), "the worker that joined during the pmap got no element"


def test_wait_for_timeout_says_what_happened(manager: ElasticManager, hand: HandStarted) -> None:
    wrong = hand.start(manager.address, cookie=secrets.token_hex(16))
    assert wrong.wait(30) == 1
    with pytest.raises(TimeoutError) as info:
        manager.wait_for(1, timeout=0.5)
    text = str(info.value)
    assert "0 of 1 workers joined the elastic manager at 127.0.0.1:" in text
    assert "wrong cookie: 1" in text
    assert f"--join 127.0.0.1:{manager.address[1]}" in text


def test_cookie_file_readable_only_by_its_owner(manager: ElasticManager, hand: HandStarted, tmp_path: Path) -> None:
    cookie = tmp_path / "cookie"
    manager.write_cookie(cookie)
    assert cookie.stat().st_mode & 0o777 == 0o600
    hand.start(manager.address, cookie_file=cookie)
    assert len(manager.wait_for(1, timeout=60)) == 1
    shared = tmp_path / "shared-cookie"
    shared.write_text(cc.cluster_cookie() + "\n")
    for mode in (0o640, 0o604):
        shared.chmod(mode)
        refused = hand.start(manager.address, cookie_file=shared)
        _, err = refused.communicate(timeout=30)
        assert refused.returncode == 2
        assert "refusing --cookie-file" in err and f"mode {mode:04o}" in err and "chmod 600" in err
    assert manager.workers() == cc.workers() and len(cc.workers()) == 1


def test_a_worker_with_a_wrong_cookie_is_told_and_exits(manager: ElasticManager, hand: HandStarted) -> None:
    proc = hand.start(manager.address, cookie=secrets.token_hex(16))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "refused the cookie" in err
    assert cc.workers() == [1] or cc.workers() == []


def test_join_errors_are_clear(hand: HandStarted) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = hand.start(("127.0.0.1", port))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and f"cannot connect to the driver at 127.0.0.1:{port}" in err
    bad = hand.start("no-port-here")
    _, err = bad.communicate(timeout=30)
    assert bad.returncode == 2 and "HOST:PORT" in err
    short = hand.start(("127.0.0.1", port), cookie="short")
    _, err = short.communicate(timeout=30)
    assert short.returncode == 2 and "cookie" in err


def test_addprocs_by_name_and_the_plugin_command(hand: HandStarted) -> None:
    joined = threading.Semaphore(0)
    assert cc.addprocs("elastic", address="127.0.0.1:0", on_join=lambda _: joined.release()) == []
    (m,) = managers()
    try:
        hand.start(m.address)
        proc = subprocess.Popen(  # `clustercore join HOST:PORT` is the same command
            [sys.executable, "-m", "clustercore", "join", f"127.0.0.1:{m.address[1]}"], stdin=subprocess.PIPE, text=True
        )
        hand.procs.append(proc)
        assert proc.stdin is not None
        proc.stdin.write(cc.cluster_cookie() + "\n")
        proc.stdin.close()
        proc.stdin = None
        assert joined.acquire(timeout=60) and joined.acquire(timeout=60)
        assert len(m.wait_for(2, timeout=1)) == 2
    finally:
        m.close()
        cc.rmprocs([p for p in cc.workers() if p != 1], waitfor=30)
    assert managers() == [] and hand.leftovers() == []


def test_bad_arguments_fail_before_listening() -> None:
    for bad, error in [
        ({"address": "localhost"}, ValueError),
        ({"address": ("127.0.0.1", 70000)}, ValueError),
        ({"address": 9009}, TypeError),
        ({"topology": "custom"}, ValueError),
        ({"on_join": "print"}, TypeError),
        ({"handshake_timeout": 0}, ValueError),
        ({"max_pending": 0}, ValueError),
        ({"lazy": "no"}, TypeError),
    ]:
        with pytest.raises(error):
            ElasticManager(**bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cc.addprocs("elastic", address="127.0.0.1:0", bogus=1)
    assert managers() == []


def test_the_address_taken_is_a_clear_error(manager: ElasticManager) -> None:
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{manager.address[1]}"):
        listen(manager.address)
    assert managers() == [manager]
