"""Every way a launch fails is diagnosed: the host, the phase, what the remote side said, in time."""

from __future__ import annotations

import glob
import os
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from clustercore_ssh import SSHLaunchError
from ssh_testing import Launched, SSHInfra, TestHosts, ssh_run, tagged_pids

import clustercore as cc
from clustercore.testing import protocol_sitecustomize

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def failed_launch(*args: object, **kwargs: object) -> SSHLaunchError:
    started = time.monotonic()
    with pytest.raises(SSHLaunchError) as info:
        cc.addprocs(*args, **kwargs)
    assert time.monotonic() - started < float(os.environ.get("CLUSTERCORE_WORKER_TIMEOUT", 60)) + 10
    assert cc.procs() == [1]
    return info.value


def test_connection_refused(cluster: Launched, ssh_infra: SSHInfra) -> None:
    err = failed_launch(["root@127.0.0.1:1"], sshflags=ssh_infra.flags)
    assert (err.host, err.phase) == ("root@127.0.0.1 (127.0.0.1:1)", "connect")
    assert "Connection refused" in str(err)


@pytest.mark.hosts
def test_unreachable_host(cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts) -> None:
    err = failed_launch(["10.200.0.250"], sshflags=ssh_infra.flags)
    assert err.phase == "connect" and "10.200.0.250" in err.host


def test_unknown_name(cluster: Launched, ssh_infra: SSHInfra) -> None:
    err = failed_launch(["no-such-host.invalid"], sshflags=ssh_infra.flags)
    assert err.phase == "connect" and "cannot resolve 'no-such-host.invalid'" in str(err)


def test_connect_timeout(cluster: Launched, ssh_infra: SSHInfra, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that never speaks SSH: bounded by CLUSTERCORE_WORKER_TIMEOUT."""
    import socket

    monkeypatch.setenv("CLUSTERCORE_WORKER_TIMEOUT", "2")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        err = failed_launch([f"root@127.0.0.1:{port}"], sshflags=ssh_infra.flags)
    assert err.phase == "ssh" and f"127.0.0.1:{port}" in err.host


def test_auth_failure(cluster: Launched, ssh_infra: SSHInfra) -> None:
    err = failed_launch([f"nobody@{ssh_infra.alias}"], sshflags=ssh_infra.flags)
    assert (err.phase, err.host.split()[0]) == ("auth", f"nobody@{ssh_infra.alias}")
    assert "no key was accepted for user 'nobody'" in str(err)


def test_missing_identity_file(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    flags = ("-p", str(ssh_infra.port), "-i", str(tmp_path / "nokey"), "-o", "IdentitiesOnly=yes")
    err = failed_launch(
        [f"root@{ssh_infra.host}"], sshflags=(*flags, "-o", f"UserKnownHostsFile={ssh_infra.known_hosts}")
    )
    assert err.phase == "auth" and f"identity file {tmp_path / 'nokey'} does not exist" in str(err)


def test_unknown_host_key_is_an_error_unless_opted_out(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    flags = (*ssh_infra.flags, "-o", f"UserKnownHostsFile={empty}")
    err = failed_launch([ssh_infra.alias], sshflags=flags)
    assert err.phase == "host key" and "is not in known_hosts" in str(err) and "StrictHostKeyChecking" in str(err)
    pids = cc.addprocs([ssh_infra.alias], sshflags=(*flags, "-o", "StrictHostKeyChecking=accept-new"))
    cluster.record(pids)
    assert f"[{ssh_infra.host}]:{ssh_infra.port} ssh-ed25519 " in empty.read_text()  # accept-new remembered it
    cc.rmprocs(pids)
    pids = cc.addprocs([ssh_infra.alias], sshflags=flags)  # now known
    cluster.record(pids)


def test_changed_host_key_is_an_error(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    import paramiko

    other = paramiko.Ed25519Key.from_private_key_file(ssh_infra.key)  # some other ed25519 key
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{ssh_infra.host}]:{ssh_infra.port} ssh-ed25519 {other.get_base64()}\n")
    flags = (*ssh_infra.flags, "-o", f"UserKnownHostsFile={wrong}")
    err = failed_launch([ssh_infra.alias], sshflags=(*flags, "-o", "StrictHostKeyChecking=accept-new"))
    assert err.phase == "host key" and "does not match" in str(err)


def test_remote_python_missing(cluster: Launched, ssh_infra: SSHInfra) -> None:
    err = failed_launch([ssh_infra.alias], sshflags=ssh_infra.flags, exename="/nonexistent/python3")
    assert err.phase == "python" and "exit status 127" in str(err)
    assert "/nonexistent/python3" in err.output  # the remote shell's own message


def test_clustercore_not_installed(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    bare = os.path.realpath(sys._base_executable)  # the venv's base interpreter: same Python, no clustercore
    # (in a directory without a clustercore/ package in it, unlike the checkout we run from)
    err = failed_launch([(ssh_infra.alias, 2)], sshflags=ssh_infra.flags, exename=bare, dir=str(tmp_path))
    assert err.phase == "import" and "No module named 'clustercore'" in str(err)


def _other_python() -> str | None:
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for pattern in ("/root/.pyenv/versions/3.*/bin/python3", "/usr/bin/python3.*", "/usr/local/bin/python3.*"):
        for path in sorted(glob.glob(pattern)):
            name = os.path.basename(os.path.dirname(os.path.dirname(path)))
            if os.access(path, os.X_OK) and not name.startswith(mine) and not path.endswith(mine):
                if path[-1].isdigit() or path.endswith("python3"):
                    return path
    return None


def test_python_version_mismatch(cluster: Launched, ssh_infra: SSHInfra) -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no Python of another minor version on this machine")
    err = failed_launch([ssh_infra.alias], sshflags=ssh_infra.flags, exename=other)
    assert err.phase == "version" and f"the driver runs Python {sys.version_info[0]}.{sys.version_info[1]}" in str(err)


def test_protocol_version_mismatch(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    """A remote clustercore speaking another protocol (simulated with a sitecustomize)."""
    (tmp_path / "sitecustomize.py").write_text(protocol_sitecustomize(999))
    err = failed_launch([ssh_infra.alias], sshflags=ssh_infra.flags, env={"PYTHONPATH": str(tmp_path)})
    assert err.phase == "version" and "clustercore protocol 999" in str(err)


def _fake_python(tmp_path: Path, body: str) -> str:
    """An exename that answers the probe like Python but runs ``body`` as the worker."""
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_worker_never_prints_its_address(
    cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTERCORE_WORKER_TIMEOUT", "3")
    fake = _fake_python(tmp_path, "echo starting up; exec cat >/dev/null")
    tag = f"CC_SSH_TEST_{uuid.uuid4().hex}"
    started = time.monotonic()
    err = failed_launch([ssh_infra.alias], sshflags=ssh_infra.flags, exename=fake, env={"CC_SSH_TEST_TAG": tag})
    assert time.monotonic() - started < 3 + 5
    assert err.phase == "worker start" and "did not print its address within 3 s" in str(err)
    assert "starting up" in err.output
    assert tagged_pids(ssh_infra, ssh_infra.alias, tag) == []  # the stuck process was ended


def test_worker_exits_before_printing_its_address(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, "echo 'cannot start: out of luck' >&2; exit 3")
    err = failed_launch([ssh_infra.alias], sshflags=ssh_infra.flags, exename=fake)
    assert err.phase == "worker start" and "exited with status 3 before printing its address" in str(err)
    assert "out of luck" in err.output


def test_bad_dir_is_its_own_phase_with_the_shells_words(cluster: Launched, ssh_infra: SSHInfra) -> None:
    err = failed_launch([(ssh_infra.alias, 2)], sshflags=ssh_infra.flags, dir="/no/such/dir")
    assert err.phase == "dir" and "/no/such/dir" in err.detail
    assert "No such file or directory" in err.detail or "can't cd" in err.detail  # bash's words, or dash's


def test_tilde_in_dir_is_expanded_there(cluster: Launched, ssh_infra: SSHInfra) -> None:
    home = ssh_run(ssh_infra, ssh_infra.alias, 'echo "$HOME"').stdout.strip()
    sub = f"cc-test-{uuid.uuid4().hex[:8]}"
    assert ssh_run(ssh_infra, ssh_infra.alias, f"mkdir {home}/{sub}").returncode == 0
    try:
        pids = cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags, dir="~")
        pids += cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags, dir=f"~/{sub}")
        pids += cc.addprocs([ssh_infra.alias], sshflags=ssh_infra.flags, dir=f"~{ssh_infra.user}/{sub}")
        cluster.record(pids)
        assert [cc.remotecall_fetch(os.getcwd, p) for p in pids] == [home, f"{home}/{sub}", f"{home}/{sub}"]
        cc.rmprocs(pids)
    finally:
        ssh_run(ssh_infra, ssh_infra.alias, f"rmdir {home}/{sub}")


def _passphrase_key(tmp_path: Path) -> str:
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
    return str(key)


def test_a_passphrase_key_is_skipped_as_openssh_does(cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path) -> None:
    """A key that needs its passphrase comes first: it is passed over, the next key logs in."""
    flags = (*ssh_infra.flags, "-i", _passphrase_key(tmp_path), "-i", ssh_infra.key, "-o", "IdentitiesOnly=yes")
    pids = cc.addprocs([ssh_infra.alias], sshflags=flags)
    cluster.record(pids)
    assert cc.remotecall_fetch(cc.myid, pids[0]) == pids[0]


def test_only_a_passphrase_key_fails_in_auth_saying_what_was_tried(
    cluster: Launched, ssh_infra: SSHInfra, tmp_path: Path
) -> None:
    locked = _passphrase_key(tmp_path)
    missing = tmp_path / "nokey"
    flags = ("-p", str(ssh_infra.port), "-o", f"UserKnownHostsFile={ssh_infra.known_hosts}", "-o", "IdentitiesOnly=yes")
    err = failed_launch([f"root@{ssh_infra.host}"], sshflags=(*flags, "-i", locked, "-i", str(missing)))
    assert err.phase == "auth" and err.host.startswith(f"root@{ssh_infra.host}")
    assert f"{locked} is protected by a passphrase: skipped" in str(err)
    assert f"identity file {missing} does not exist" in str(err) and "IdentitiesOnly" in str(err)


def test_connect_timeout_bounds_the_banner_and_paramiko_stays_quiet(
    cluster: Launched, ssh_infra: SSHInfra, capfd: pytest.CaptureFixture[str]
) -> None:
    """A host that accepts TCP but never speaks SSH: ConnectTimeout bounds the wait for its
    banner (not CLUSTERCORE_WORKER_TIMEOUT), and no paramiko line reaches stderr."""
    import socket

    import paramiko

    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        err = failed_launch([f"root@127.0.0.1:{port}"], sshflags=(*ssh_infra.flags, "-o", "ConnectTimeout=1"))
    assert err.phase == "ssh" and f"127.0.0.1:{port}" in err.host
    assert "no SSH banner" in err.detail and "within 1 s (ConnectTimeout)" in err.detail
    for thread in threading.enumerate():  # paramiko's own thread logs its end: wait for it
        if isinstance(thread, paramiko.Transport):
            thread.join(10)
    stderr = capfd.readouterr().err
    assert "paramiko" not in stderr and "SSH protocol banner" not in stderr


def test_one_bad_host_does_not_leave_the_good_ones_running(cluster: Launched, ssh_infra: SSHInfra) -> None:
    tag = f"CC_SSH_TEST_{uuid.uuid4().hex}"
    env = {"CC_SSH_TEST_TAG": tag}
    err = failed_launch([(ssh_infra.alias, 2), "root@127.0.0.1:1"], sshflags=ssh_infra.flags, env=env)
    assert err.phase == "connect"
    # the two good workers were connected, then removed by the core: nothing of them may remain
    assert tagged_pids(ssh_infra, ssh_infra.alias, tag) == []
