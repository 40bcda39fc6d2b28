"""addprocs is all or nothing over SSH too: a Ctrl-C while one host hangs ends everything it started."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid

import pytest
from ssh_testing import Launched, SSHInfra, tagged_pids

import clustercore as cc

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def _interrupt_when(ready: threading.Event, timeout: float) -> threading.Thread:
    """SIGINT to the main thread (a Ctrl-C at the terminal) once ``ready`` is set."""

    def send() -> None:
        if ready.wait(timeout):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_while_a_host_hangs_ends_the_good_hosts_workers(cluster: Launched, ssh_infra: SSHInfra) -> None:
    """One host accepts TCP and never speaks SSH; the other's workers have joined. Ctrl-C:
    the caller gets KeyboardInterrupt, no worker is left (workers(), the remote processes),
    and the connection to the hung host is closed."""
    tag = f"CC_SSH_TEST_{uuid.uuid4().hex}"
    joined = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = hung.getsockname()[1]
        hung.settimeout(30)

        def watch() -> None:  # the hung host was dialled and the good host's two workers joined
            conn, _ = hung.accept()
            watch.conn = conn  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while len(cc.procs()) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)  # joins have no public event before addprocs returns
            joined.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        sender = _interrupt_when(joined, 40)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            cc.addprocs(
                [(ssh_infra.alias, 2), f"root@127.0.0.1:{port}"], sshflags=ssh_infra.flags, env={"CC_SSH_TEST_TAG": tag}
            )
        took = time.monotonic() - started
        sender.join(5)
        watcher.join(5)
        assert cc.procs() == [1]
        assert tagged_pids(ssh_infra, ssh_infra.alias, tag) == []  # the good host's workers were ended
        conn = watch.conn  # type: ignore[attr-defined]
        conn.settimeout(10)
        with conn:  # we closed our end of the hung connection: after our banner, its end
            while conn.recv(4096):
                pass  # a TimeoutError here: it is still open
    print(f"addprocs returned {took:.2f} s after it started (the hung host alone would hold it 60 s)")


def test_ctrl_c_while_the_first_host_hangs_ends_the_workers_waiting_behind_it(
    cluster: Launched, ssh_infra: SSHInfra
) -> None:
    """The hung host comes first: the good host's workers run but wait for their turn (pids
    follow the machine list). Ctrl-C: they are ended though the core never saw them."""
    tag = f"CC_SSH_TEST_{uuid.uuid4().hex}"
    running = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = hung.getsockname()[1]

        def watch() -> None:  # the good host's two workers run (their processes carry the tag)
            deadline = time.monotonic() + 30
            while len(tagged_pids(ssh_infra, ssh_infra.alias, tag, timeout=0)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # remote processes: no event to wait on
            running.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        sender = _interrupt_when(running, 40)
        with pytest.raises(KeyboardInterrupt):
            cc.addprocs(
                [f"root@127.0.0.1:{port}", (ssh_infra.alias, 2)], sshflags=ssh_infra.flags, env={"CC_SSH_TEST_TAG": tag}
            )
        sender.join(5)
        watcher.join(5)
    assert cc.procs() == [1]
    assert tagged_pids(ssh_infra, ssh_infra.alias, tag) == []
