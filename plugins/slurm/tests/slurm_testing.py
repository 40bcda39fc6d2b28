"""Helpers for the Slurm plugin's tests: the test cluster of ``make services``, the queue, processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ccservices

from clustercore import testing

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PYTHON = sys.executable  # the venv's absolute interpreter: what drivers and workers run


class SlurmCluster:
    """The test cluster of ``make services``, in the mode a test needs; one per session.

    ``make services`` starts a single-node Slurm. As root, :meth:`ensure` switches the running
    cluster between one and three nodes with ``tests/services/slurm up N`` (idempotent: ~0.2 s
    when already in that mode, a few seconds to switch). Without root, or when Slurm is not
    running, it takes ``SLURM_CONF`` and ``CLUSTERCORE_SLURM_*`` as they are.
    """

    def __init__(self) -> None:
        self.nodes: int | None = None
        self.env: dict[str, str] = {}

    def ensure(self, nodes: int) -> dict[str, str]:
        if self.nodes == nodes:
            return self.env
        what = "Slurm with 3 simulated nodes" if nodes > 1 else "a single-node Slurm"
        ccservices.load_env()
        ours = os.environ.get("SLURM_CONF") == str(ccservices.STATE / "slurm" / "etc" / "slurm.conf")
        if ours and ccservices.is_running("slurm") and os.geteuid() == 0:
            try:
                env = ccservices.run("slurm", "up", str(nodes))
            except ccservices.ServiceError as e:
                testing.service_missing(f"{what} did not come up: {e}")
        else:
            conf = os.environ.get("SLURM_CONF", "")
            if not conf or not Path(conf).is_file():
                testing.service_missing(f"{what} is not running: {ccservices.HOW}")
            env = {k: v for k, v in os.environ.items() if k == "SLURM_CONF" or k.startswith("CLUSTERCORE_SLURM_")}
            running = env.get("CLUSTERCORE_SLURM_NODES", "").split()
            if len(running) != nodes:
                testing.service_missing(
                    f"{what} is not running (Slurm runs on {' '.join(running) or 'unknown nodes'}); run the tests"
                    f" as root after `make services`: they switch its mode (tests/services/slurm up {nodes})"
                )
        self.env = env
        self.nodes = nodes
        return self.env


def squeue_jobs() -> list[str]:
    """Lines ``JOBID|STATE|NAME`` of every job in the queue (of this test cluster)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%T|%j"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def wait_queue_empty(timeout: float = 30.0) -> list[str]:
    """Jobs still queued after ``timeout`` (polls squeue: Slurm has no event for a job leaving)."""
    deadline = time.monotonic() + timeout
    jobs = squeue_jobs()
    while jobs and time.monotonic() < deadline:
        time.sleep(0.2)
        jobs = squeue_jobs()
    return jobs


def wait_until_gone(ospids: list[int], timeout: float = 20.0) -> list[int]:
    """OS pids still alive after ``timeout`` (the simulated nodes share this machine's pid space)."""
    return testing.wait_until_gone(ospids, timeout)


# --- drivers run inside an allocation -------------------------------------------------

DRIVER = """\
import json, os, socket
import clustercore as cc

pids = cc.addprocs("slurm")
info = [
    cc.remotecall_fetch(
        lambda: {k: os.environ.get(k) for k in ("SLURM_PROCID", "SLURM_JOB_ID", "SLURM_STEP_ID")}
        | {"host": socket.gethostname()},
        p,
    )
    for p in pids
]
cross = cc.remotecall_fetch(lambda q: cc.remotecall_fetch(socket.gethostname, q), pids[0], pids[-1])
print("RESULT " + json.dumps({"job": os.environ["SLURM_JOB_ID"], "pids": pids, "info": info, "cross": cross}))
cc.rmprocs(pids)
"""


def write_driver(tmp_path: Path) -> Path:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return script


def result_of(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise AssertionError(f"the driver printed no result:\n{output}")


def check(result: dict[str, Any], ntasks: int) -> None:
    assert len(result["pids"]) == ntasks
    assert sorted(int(i["SLURM_PROCID"]) for i in result["info"]) == list(range(ntasks))
    assert {i["SLURM_JOB_ID"] for i in result["info"]} == {result["job"]}  # a step of the driver's own job
    assert len({i["SLURM_STEP_ID"] for i in result["info"]}) == 1


def run_sbatch(tmp_path: Path, *flags: str) -> dict[str, Any]:
    driver, out = write_driver(tmp_path), tmp_path / "job.out"
    done = subprocess.run(
        ["sbatch", "--wait", *flags, f"--chdir={tmp_path}", f"--output={out}", f"--wrap={PYTHON} {driver}"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    text = out.read_text() if out.exists() else ""
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n{text}"
    return result_of(text)
