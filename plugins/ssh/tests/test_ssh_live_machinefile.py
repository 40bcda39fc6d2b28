"""``clustercore --machine-file FILE script.py``: Julia's ``julia --machine-file``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ssh_testing import SSHInfra, TestHosts, wait_gone

pytestmark = [pytest.mark.sshd, pytest.mark.hosts, pytest.mark.timeout(120)]

SCRIPT = """\
import os, socket, sys
import clustercore as cc
where = [cc.remotecall_fetch(lambda: (socket.gethostname(), os.getpid()), p) for p in cc.workers()]
print("ARGS", sys.argv[1:])
for host, ospid in where:
    print("WORKER", host, ospid)
"""


def test_machine_file_runs_a_script_with_ssh_workers(
    ssh_infra: SSHInfra, test_hosts: TestHosts, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(Path(ssh_infra.config).read_text())  # the user's ~/.ssh/config
    a, b = test_hosts.aliases[:2]
    machines = tmp_path / "machines"
    machines.write_text(f"# two hosts\n2*{a}\n{b}\n")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "clustercore", "--machine-file", str(machines), str(script), "x", "y"],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ARGS ['x', 'y']" in proc.stdout
    workers = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("WORKER ")]
    assert sorted(host for host, _ in workers) == sorted([a, a, b])
    for host in (a, b):  # the command removed its workers when the script ended
        assert wait_gone(ssh_infra, host, [int(pid) for h, pid in workers if h == host]) == []


def test_bad_machine_file_fails_before_connecting(tmp_path: Path) -> None:
    machines = tmp_path / "machines"
    machines.write_text("good-host\n2*bad:host:22\n")
    script = tmp_path / "script.py"
    script.write_text("print('ran')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "clustercore", "--machine-file", str(machines), str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "ran" not in proc.stdout
    assert f"{machines}:2:" in proc.stderr and "'bad:host:22'" in proc.stderr


def test_machine_file_with_sshflags_tunnel_exename_and_comments(
    ssh_infra: SSHInfra, test_hosts: TestHosts, tmp_path: Path
) -> None:
    """No ~/.ssh/config: the keys and known_hosts come from --sshflags; trailing comments are comments."""
    a, b = test_hosts.aliases[:2]
    machines = tmp_path / "machines"
    machines.write_text(f"{a}   # the first host\n2*{b}\t# two on the second\n")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "clustercore", "--machine-file", str(machines)]
    command += ["--sshflags", f"-F {ssh_infra.config} -i {ssh_infra.key}", "--tunnel", "--exename", sys.executable]
    proc = subprocess.run(
        [*command, str(script)],
        env={**os.environ, "HOME": str(tmp_path)},  # no ~/.ssh here
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    workers = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("WORKER ")]
    assert sorted(host for host, _ in workers) == sorted([a, b, b])
    for host in (a, b):
        assert wait_gone(ssh_infra, host, [int(pid) for h, pid in workers if h == host]) == []


def test_a_failed_launch_is_one_line_not_a_traceback(ssh_infra: SSHInfra, tmp_path: Path) -> None:
    machines = tmp_path / "machines"
    machines.write_text(f"nobody@{ssh_infra.alias}\n")
    script = tmp_path / "script.py"
    script.write_text("print('ran')\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "clustercore",
            "--machine-file",
            str(machines),
            "--sshflags",
            f"-F {ssh_infra.config}",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1 and "ran" not in proc.stdout
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("clustercore: cannot add the workers: ssh nobody@") and "'auth'" in line
