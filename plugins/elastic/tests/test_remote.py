"""Workers that join from elsewhere: the namespace hosts over SSH, and an ``sbatch`` job.

They need the test services of ``make services`` (as root): without them these tests are
skipped, saying so, and fail when ``CI`` is set. The driver is this test process, outside any
allocation; it listens on the controller's address of the namespace network (10.200.0.1).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ccservices
import pytest
from clustercore_elastic import ElasticManager
from elastic_testing import listening

import clustercore as cc
from clustercore.testing import service_missing


def _listen_on(address: str) -> Iterator[ElasticManager]:
    with listening((address, 0)) as m:
        yield m


@pytest.fixture
def hosts() -> tuple[str, list[str], str]:
    """(ssh config, the namespace hosts' names, the controller's address)."""
    ccservices.load_env()
    config = os.environ.get("CLUSTERCORE_SSH_CONFIG", "")
    names = os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()
    controller = os.environ.get("CLUSTERCORE_TEST_CONTROLLER_ADDR", "")
    if not (os.path.isfile(config) and len(names) >= 3 and controller):
        service_missing(f"the network-namespace hosts ccnode1..3 are not running: {ccservices.HOW}")
    if not os.access(os.environ.get("CLUSTERCORE_SSH_KEY", ""), os.R_OK):
        service_missing("the hosts' ssh key is not readable here: run the tests as root")
    return config, names[:3], controller


@pytest.fixture
def on_controller(hosts: tuple[str, list[str], str]) -> Iterator[ElasticManager]:
    yield from _listen_on(hosts[2])


def test_workers_join_from_the_namespace_hosts_over_ssh(
    hosts: tuple[str, list[str], str], on_controller: ElasticManager
) -> None:
    config, names, _ = hosts
    host, port = on_controller.address
    command = f"exec {shlex.quote(sys.executable)} -m clustercore worker --join {host}:{port}"
    sessions = []
    for name in names:
        ssh = subprocess.Popen(["ssh", "-F", config, "-T", name, command], stdin=subprocess.PIPE, text=True)
        assert ssh.stdin is not None
        ssh.stdin.write(cc.cluster_cookie() + "\n")  # over the SSH channel, as the SSH plugin sends it
        ssh.stdin.close()
        ssh.stdin = None
        sessions.append(ssh)
    try:
        pids = on_controller.wait_for(3, timeout=90)
        assert sorted(cc.remotecall_fetch(socket.gethostname, p) for p in pids) == sorted(names)
        # the hosts reach each other at the addresses their workers sent the driver
        first, last = pids[0], pids[-1]
        assert cc.remotecall_fetch(lambda q: cc.remotecall_fetch(socket.gethostname, q), first, last) in names
        assert set(cc.pmap(lambda _: socket.gethostname(), range(60))) == set(names)
        cc.rmprocs(pids, waitfor=30)
        assert [s.wait(30) for s in sessions] == [0, 0, 0]  # each worker exited, and its ssh with it
    finally:
        for s in sessions:
            if s.poll() is None:
                s.kill()
                s.wait()


@pytest.fixture
def slurm() -> dict[str, str]:
    ccservices.load_env()
    conf = os.environ.get("SLURM_CONF", "")
    if not conf or not Path(conf).is_file() or shutil.which("sbatch") is None:
        service_missing(f"Slurm is not running: {ccservices.HOW}")
    return {"SLURM_CONF": conf}


@pytest.fixture
def outside(slurm: dict[str, str]) -> Iterator[ElasticManager]:
    """The driver: this process, outside any allocation, listening on all interfaces."""
    assert "SLURM_JOB_ID" not in os.environ
    yield from _listen_on("0.0.0.0")


def test_an_sbatch_job_joins_a_driver_outside_the_allocation(
    outside: ElasticManager, slurm: dict[str, str], tmp_path: Path
) -> None:
    cookie = tmp_path / "cookie"
    outside.write_cookie(cookie)
    port = outside.address[1]
    host = socket.gethostname()
    worker = f"{shlex.quote(sys.executable)} -m clustercore worker --join {host}:{port} --cookie-file {cookie}"
    out = tmp_path / "job.out"
    flags = ["--wait", "--parsable", "--ntasks=2", f"--output={out}", f"--chdir={tmp_path}"]
    sbatch = subprocess.Popen(  # --wait: sbatch returns when the job has ended, with its exit code
        ["sbatch", *flags, f"--wrap=srun {worker}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **slurm},
    )  # fmt: skip
    assert sbatch.stdout is not None
    job = sbatch.stdout.readline().strip().split(";")[0]
    assert job.isdigit(), sbatch.communicate(timeout=30)
    try:
        pids = outside.wait_for(2, timeout=120)
        jobs = {cc.remotecall_fetch(lambda: os.environ.get("SLURM_JOB_ID"), p) for p in pids}
        assert jobs == {job}
        tasks = sorted(cc.remotecall_fetch(lambda: int(os.environ["SLURM_PROCID"]), p) for p in pids)
        assert tasks == [0, 1]
        assert sorted(cc.pmap(lambda x: x * x, range(20))) == [x * x for x in range(20)]
        cc.rmprocs(pids, waitfor=30)
        _, err = sbatch.communicate(timeout=60)
        assert sbatch.returncode == 0, f"{err}{out.read_text() if out.exists() else ''}"  # the job ended, cleanly
    finally:
        if sbatch.poll() is None:
            subprocess.run(["scancel", job], capture_output=True, timeout=30, env={**os.environ, **slurm})
            sbatch.communicate(timeout=60)
