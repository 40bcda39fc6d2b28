"""Helpers for the Slurm plugin's tests: the shared test cluster, the queue, processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clustercore import testing

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
INFRA = Path(os.environ.get("CLUSTERCORE_SHARED_INFRA", REPO.parent / "shared" / "infra"))
UP_TIMEOUT = 180.0
PYTHON = sys.executable  # the venv's absolute interpreter: what drivers and workers run
_EXPORT = re.compile(r'export (\w+)=(?:"(.*)"|(\S*))')


class SlurmCluster:
    """Starts (or switches) the shared test cluster; one per session."""

    def __init__(self) -> None:
        self.nodes: int | None = None
        self.env: dict[str, str] = {}

    def ensure(self, nodes: int) -> dict[str, str]:
        if self.nodes == nodes:
            return self.env
        script = INFRA / "slurm-up"
        if not script.is_file():
            _missing(f"{script} not found (set CLUSTERCORE_SHARED_INFRA)")
        argv = ["bash", str(script)] + ([str(nodes)] if nodes > 1 else [])
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _missing(f"{' '.join(argv)} did not finish within {UP_TIMEOUT:g} s")
        if result.returncode != 0:
            _missing(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self.env = {m[1]: m[2] if m[2] is not None else m[3] for m in _EXPORT.finditer(result.stdout)}
        os.environ.update(self.env)
        self.nodes = nodes
        return self.env


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Slurm test infrastructure missing: {why}", pytrace=False)
    pytest.skip(f"Slurm test infrastructure missing: {why}")


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
