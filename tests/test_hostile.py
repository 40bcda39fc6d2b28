"""Another user on the same host, and a man in the middle, against live workers.

The attacker runs as user ``nobody`` (``setpriv``, which needs root: CI runs
as root, and under ``CI=true`` a missing ``setpriv`` or root fails instead of
skipping). The attacks are those of issue 11: squatting the abstract Unix
socket name a worker is about to dial, relaying or reflecting a dial, and
dialing a worker's Unix socket from another uid. Each must fail with nothing
read or unpickled, while the cluster keeps working.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import clustercore as cc
from clustercore.engine import cluster

from .relay import relay

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
ATTACKER_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a venv under /root


def _need_another_user() -> None:
    missing = []
    if os.getuid() != 0:
        missing.append("root")
    if SETPRIV is None:
        missing.append("setpriv (util-linux)")
    if not os.access(ATTACKER_PYTHON, os.X_OK):
        missing.append(ATTACKER_PYTHON)
    if missing:
        reason = f"acting as another user needs {', '.join(missing)}: run the tests as root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def as_nobody() -> Iterator[list[subprocess.Popen[str]]]:
    """Start Python programs as user ``nobody``; every one is ended when the test ends."""
    _need_another_user()
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def run_as_nobody(started: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    command = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ATTACKER_PYTHON, "-c"]
    proc = subprocess.Popen(
        [*command, textwrap.dedent(code), *args],  # type: ignore[list-item]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    started.append(proc)
    return proc


SQUATTER = """
    import socket, sys
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sys.argv[1].encode("latin-1").replace(b"@", b"\\0", 1))
    listener.listen(8)
    print("listening", flush=True)
    listener.settimeout(60)
    conn, _ = listener.accept()
    conn.settimeout(20)
    # What an attacker would send: a handshake reply it cannot forge, then a frame
    # whose pickle would run a command. None of it may be read.
    try:
        conn.sendall(b"CLSTCORE" + bytes(36) + bytes(32) + bytes(100) + sys.argv[2].encode())
    except OSError:
        pass  # the worker hung up at once
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except OSError:
        pass
    print(f"received {len(got)} bytes", flush=True)
"""


def squatted_name() -> str:
    """A name a worker of this host would dial (``cluster.same_host`` accepts it)."""
    name = cluster.local_socket_name()
    assert cluster.same_host(name)
    return name


def point_worker_at(pid: int, peer: int, address: str) -> None:
    """Make worker ``pid`` believe that ``peer``'s Unix socket is ``address``."""

    def repoint(peer: int, address: str) -> None:
        from clustercore.engine.cluster import worker_from_id

        worker_from_id(peer).local_address = address

    cc.remotecall_fetch(repoint, pid, peer, address)


def call_through(a: int, b: int) -> int:
    return cc.remotecall_fetch(lambda b: cc.remotecall_fetch(cc.myid, b), a, b)  # type: ignore[no-any-return]


def test_a_squatted_unix_socket_of_another_user_is_passed_over(
    two: list[int], as_nobody: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    """Issue 11's attack, step 1: ``nobody`` binds the name worker a is about to dial.
    Worker a reads nothing from it (SO_PEERCRED), sends it nothing, and reaches b over TCP."""
    a, b = two
    name = squatted_name()
    marker = tmp_path / "pwned"
    squatter = run_as_nobody(as_nobody, SQUATTER, "@" + name[1:], f"open({str(marker)!r}, 'w')")
    assert squatter.stdout is not None and squatter.stdout.readline().strip() == "listening"
    point_worker_at(a, b, name)
    assert call_through(a, b) == b
    out, err = squatter.communicate(timeout=60)
    assert "received 0 bytes" in out, err  # not even a nonce went to another user
    assert not marker.exists()
    assert call_through(a, b) == b


def test_another_user_dialing_a_workers_unix_socket_is_refused_unread(
    two: list[int], as_nobody: list[subprocess.Popen[str]]
) -> None:
    a = two[0]
    address = cluster.worker_from_id(a).local_address
    assert address, "the worker announced no Unix socket"
    dialer = run_as_nobody(
        as_nobody,
        """
        import socket, sys
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(sys.argv[1].encode("latin-1").replace(b"@", b"\\0", 1))
        sock.sendall(b"CLSTCORE" + bytes(32) + bytes(8))
        try:
            print(f"answered {len(sock.recv(100))} bytes", flush=True)
        except ConnectionResetError:
            print("answered 0 bytes", flush=True)
        """,
        "@" + address[1:],
    )
    out, err = dialer.communicate(timeout=60)
    assert "answered 0 bytes" in out, err
    assert cc.remotecall_fetch(cc.myid, a) == a


def test_a_dial_relayed_to_the_dialers_own_listener_fails_and_the_call_goes_on(two: list[int]) -> None:
    """A man in the middle (here as the same user: as on a network path) accepts worker
    a's dial to b and relays it to a's own Unix socket. The proofs name both ends, so
    a's listener refuses a handshake meant for b; a falls back to TCP."""
    a, b = two
    name = squatted_name()
    own = cluster.worker_from_id(a).local_address
    relayed = threading.Event()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(4)
    listener.settimeout(60)

    def man_in_the_middle() -> None:
        try:
            dialer, _ = listener.accept()
        except OSError:
            return
        target = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target.connect(own)
        relayed.set()
        for t in relay(dialer, target):
            t.join(30)

    thread = threading.Thread(target=man_in_the_middle, daemon=True)
    thread.start()
    try:
        point_worker_at(a, b, name)
        assert call_through(a, b) == b
        assert relayed.is_set()
    finally:
        listener.close()
        thread.join(30)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
