"""More workers on a host than its sshd allows sessions per connection: a second transport opens."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clustercore_ssh import SSHManager
from ssh_testing import Launched, SSHInfra

import clustercore as cc

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]
MAX_SESSIONS = 3


@pytest.fixture
def small_sshd(ssh_infra: SSHInfra, tmp_path: Path) -> Iterator[int]:
    """A private sshd like the loopback one but with ``MaxSessions 3``, on a free port."""
    source = Path(ssh_infra.config).parent.parent / "sshd-local" / "sshd_config"
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not source.is_file() or not Path(sshd).is_file():
        pytest.skip("needs the sshd-local instance's config and /usr/sbin/sshd")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = [
        line for line in source.read_text().splitlines() if not line.startswith(("Port ", "PidFile ", "MaxSessions "))
    ]
    lines += [f"Port {port}", f"PidFile {tmp_path / 'sshd.pid'}", f"MaxSessions {MAX_SESSIONS}"]
    config = tmp_path / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # sshd says when it listens
            if "Server listening" in line:
                break
        else:
            pytest.fail(f"sshd did not start: exit status {proc.wait()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_sessions_beyond_max_sessions_use_another_transport(
    cluster: Launched, ssh_infra: SSHInfra, small_sshd: int
) -> None:
    flags = ("-i", ssh_infra.key, "-o", "StrictHostKeyChecking=no")  # its host key is cc-local's, on another port
    manager = SSHManager(machines=[(f"root@127.0.0.1:{small_sshd}", 5)], sshflags=flags)
    pids = cc.addprocs(manager)
    cluster.record(pids)
    assert len(pids) == 5 and cc.remotecall_fetch(sum, pids[-1], [1, 1]) == 2
    (conn,) = manager._connections.values()
    assert len(conn._links) >= 2
    assert all(len([c for c in link.sessions if not c.closed]) <= MAX_SESSIONS for link in conn._links)
