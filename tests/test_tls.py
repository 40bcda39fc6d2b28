"""TLS on the links between processes: real workers dialed over TCP on loopback.

Local workers reach the driver through a Unix socket pair, which TLS leaves
alone (``SO_PEERCRED`` guards it), so these tests use a manager whose workers
the driver dials over TCP, as SSH, Slurm and Kubernetes workers are. Between
hosts (network namespaces, over SSH and Slurm) see the plugins' tests.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clustercore as cc
from clustercore.engine.cluster import PGRP
from clustercore.errors import HandshakeError
from clustercore.links.certificates import make_cluster_credentials
from clustercore.links.credentials import TLSCredentials
from clustercore.plugin import (
    WorkerConfig,
    cluster_cookie,
    read_worker_address,
)
from clustercore.testing import TCPWorkers
from clustercore.wire import handshake


class TCPManager(TCPWorkers):
    """:class:`~clustercore.testing.TCPWorkers` whose driver-side socket may have a tiny
    send buffer (``sndbuf`` > 0), so sends are taken only in part."""

    def __init__(self, n: int, secret: Any = None, sndbuf: int = 0) -> None:
        super().__init__(n, secret)
        self.sndbuf = sndbuf

    def connect(self, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        host, port = read_worker_address(pid, config)
        config.connect_at = (host, port)
        sock = socket.create_connection((host, port), timeout=30)
        sock.settimeout(None)
        if self.sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        return sock, sock


class TamperedTCPManager(TCPManager):
    """The driver's link to each worker passes a man in the middle who, once ``tamper`` is
    set, alters the next bytes that go to the worker: ``b"/ran"`` becomes ``b"/rAn"``
    where it can read that (a plain link), else one bit of the chunk flips."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.tamper = threading.Event()

    def connect(self, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        host, port = read_worker_address(pid, config)
        listener = socket.create_server(("127.0.0.1", 0))
        driver_side = socket.create_connection(listener.getsockname(), timeout=30)
        middle, _ = listener.accept()
        listener.close()
        worker_side = socket.create_connection((host, port), timeout=30)
        for src, dst, flip in ((middle, worker_side, True), (worker_side, middle, False)):
            threading.Thread(target=self._pump, args=(src, dst, flip), daemon=True).start()
        config.connect_at = (host, port)
        driver_side.settimeout(None)
        return driver_side, driver_side

    def _pump(self, src: socket.socket, dst: socket.socket, flip: bool) -> None:
        try:
            while data := src.recv(65536):
                if flip and self.tamper.is_set():
                    self.tamper.clear()
                    if b"/ran" in data:
                        data = data.replace(b"/ran", b"/rAn")
                    else:
                        middle = len(data) // 2
                        data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def mark(path: str) -> None:
    Path(path).write_text("ran")


def test_a_machine_on_the_path_alters_a_plain_link_but_not_a_tls_one(fresh: None, tmp_path: Path) -> None:
    plain = TamperedTCPManager(1)
    (a,) = cc.addprocs(plain, tls=False)
    plain.tamper.set()
    cc.remotecall_fetch(mark, a, str(tmp_path / "ran"))
    assert (tmp_path / "rAn").exists() and not (tmp_path / "ran").exists()  # it ran what the middle wrote
    cc.rmprocs([a])

    manager = TamperedTCPManager(1)
    (b,) = cc.addprocs(manager, tls=True)
    assert cc.remotecall_fetch(cc.myid, b) == b  # the relay passes what it does not touch
    manager.tamper.set()
    with pytest.raises(cc.ProcessExitedException):
        cc.remotecall_fetch(mark, b, str(tmp_path / "ran"))
    assert not (tmp_path / "ran").exists()  # the worker refused the altered record instead of running it
    assert cc.workers() == [1]


@pytest.fixture
def tls_pair(fresh: None) -> Iterator[list[int]]:
    yield cc.addprocs(TCPManager(2), tls=True)


def transport_of(pid: int) -> str:
    return type(PGRP.workers[pid].conn.transport).__name__  # type: ignore[union-attr]


def echo(x: bytes) -> bytes:
    return x


def test_calls_go_over_tls_and_big_payloads_cross_in_both_directions(tls_pair: list[int]) -> None:
    a, b = tls_pair
    assert transport_of(a) == transport_of(b) == "TLSTransport"
    blob = os.urandom(5_000_000)
    assert cc.remotecall_fetch(echo, a, blob) == blob
    # several threads sending medium payloads at once: the class of the old deadlock
    errors: list[BaseException] = []

    def sender(seed: int) -> None:
        try:
            for i in range(4):
                data = os.urandom(1_600_000 + seed * 1000 + i)
                assert cc.remotecall_fetch(echo, b, data) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)
    # a worker's own links are authenticated the same way
    assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(cc.myid, q), a, b) == b


def test_frames_that_the_socket_takes_only_in_part_arrive_whole_and_in_order(fresh: None) -> None:
    """Small frames into a tiny send buffer: the ciphertext a send could not write waits
    for the link's writer, ahead of every later frame (4 threads, ~150 KB each)."""
    (a,) = cc.addprocs(TCPManager(1, sndbuf=8192), tls=True)
    errors: list[BaseException] = []

    def sender(seed: int) -> None:
        try:
            for i in range(40):
                data = bytes([seed, i % 256]) * (75_000 + 97 * i)
                assert cc.remotecall_fetch(echo, a, data) == data
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("stranger", ["no certificate", "a certificate of another CA"])
def test_a_worker_refuses_a_client_it_cannot_verify(tls_pair: list[int], stranger: str) -> None:
    """The attacker accepts any server certificate (CERT_NONE): only the worker's own check
    of the client's certificate stands between it and the cookie handshake."""
    a, _ = tls_pair
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if stranger != "no certificate":
        other = make_cluster_credentials("stranger")
        ctx = other.context(server_side=False)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    host, port = PGRP.workers[a].connect_at
    answer = b""
    with socket.create_connection((host, port), timeout=30) as raw, ctx.wrap_socket(raw) as tls:
        try:
            tls.sendall(handshake.MAGIC + os.urandom(handshake.NONCE_LEN) + handshake.ENDS.pack(1, a))
            while chunk := tls.recv(4096):
                answer += chunk
        except (ssl.SSLError, OSError):
            pass  # TLS 1.3: the worker's verdict on our certificate arrives as an alert here
    assert handshake.MAGIC not in answer and answer == b""
    assert cc.remotecall_fetch(cc.myid, a) == a


def test_a_plain_handshake_to_a_tls_worker_is_refused_and_nothing_is_read(tls_pair: list[int]) -> None:
    a, _ = tls_pair
    host, port = PGRP.workers[a].connect_at
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(handshake.MAGIC + os.urandom(handshake.NONCE_LEN) + handshake.ENDS.pack(1, a))
        try:
            answer = sock.recv(100)
        except ConnectionResetError:  # closed with our bytes unread
            answer = b""
        assert answer == b""  # closed unanswered: not even the acceptor's pid
    assert cc.remotecall_fetch(cc.myid, a) == a


def test_a_peer_with_a_certificate_of_another_ca_fails_the_tls_handshake(tls_pair: list[int], tmp_path: Path) -> None:
    a, _ = tls_pair
    stranger = make_cluster_credentials("stranger")
    ctx = stranger.context(server_side=False)
    host, port = PGRP.workers[a].connect_at
    with socket.create_connection((host, port), timeout=30) as raw, pytest.raises((ssl.SSLError, OSError)):
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(handshake.MAGIC)
            tls.recv(100)  # TLS 1.3: the server's verdict on our certificate arrives here
    assert cc.remotecall_fetch(cc.myid, a) == a


def test_the_cluster_cannot_switch_tls_while_it_has_workers(tls_pair: list[int]) -> None:
    with pytest.raises(ValueError, match="running workers use TLS; cannot add workers with tls=False"):
        cc.addprocs(TCPManager(1), tls=False)
    with pytest.raises(ValueError, match="other TLS credentials"):
        cc.addprocs(TCPManager(1), tls=make_cluster_credentials("other"))
    with pytest.raises(TypeError, match="tls must be True, False or TLSCredentials"):
        cc.addprocs(TCPManager(1), tls="yes")
    (c,) = cc.addprocs(TCPManager(1))  # None: as the running workers
    assert transport_of(c) == "TLSTransport"
    assert cc.workers() == [*tls_pair, c]


def test_clustercore_tls_takes_only_on_and_off(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCORE_TLS", "enabled")
    with pytest.raises(ValueError, match="CLUSTERCORE_TLS='enabled': use 1"):
        cc.addprocs(TCPManager(1))
    assert cc.workers() == [1]


def test_clustercore_tls_in_the_environment_turns_tls_on(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTERCORE_TLS", "1")
    (a,) = cc.addprocs(TCPManager(1))
    assert transport_of(a) == "TLSTransport"
    cc.rmprocs([a])
    monkeypatch.setenv("CLUSTERCORE_TLS", "0")
    (b,) = cc.addprocs(TCPManager(1))
    assert transport_of(b) == "SocketTransport"


def test_your_own_ca_certificate_and_key_from_files(fresh: None, tmp_path: Path) -> None:
    mine = make_cluster_credentials("mine")
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_bytes(getattr(mine, name))
    creds = TLSCredentials.from_files(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    assert creds == mine and "PRIVATE" not in repr(creds)
    (a,) = cc.addprocs(TCPManager(1), tls=creds)
    assert transport_of(a) == "TLSTransport" and cc.remotecall_fetch(cc.myid, a) == a
    with pytest.raises(ValueError, match=r"cannot read TLS file .*missing\.pem"):
        TLSCredentials.from_files(tmp_path / "missing.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(ValueError, match="unusable TLS credentials"):
        TLSCredentials.from_files(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "ca.pem")


def test_a_launcher_that_hands_over_only_the_cookie_fails_with_a_clear_error(fresh: None) -> None:
    with pytest.raises(HandshakeError, match=r"TLS handshake .* failed: .*worker_secret"):
        cc.addprocs(TCPManager(1, secret=cluster_cookie), tls=True)
    assert cc.workers() == [1]


@pytest.mark.parametrize("word", ["not-base64-json", "unusable"])
def test_a_worker_refuses_malformed_or_unusable_tls_credentials_on_its_stdin(word: str) -> None:
    if word == "unusable":  # well-formed, but the key is the CA's certificate
        creds = make_cluster_credentials("bad")
        word = TLSCredentials(creds.ca, creds.cert, creds.ca).encode()
    worker = subprocess.run(
        [sys.executable, "-m", "clustercore", "worker"],
        input=f"{'a' * 32} {word}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 2
    assert "TLS credentials" in worker.stderr and "Traceback" not in worker.stderr


def test_credentials_travel_as_one_word_and_back() -> None:
    creds = make_cluster_credentials("word")
    word = creds.encode()
    assert word.split() == [word] and TLSCredentials.decode(word) == creds
    for bad in ("", "e30", "!!!"):
        with pytest.raises(ValueError, match="malformed TLS credentials"):
            TLSCredentials.decode(bad)
