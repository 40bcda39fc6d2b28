"""Three simulated nodes (``slurm-up 3``): workers spread over node names, grouped, talking across nodes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_testing import check, run_sbatch

import clustercore as cc
from clustercore.testing import worker_info

pytestmark = [pytest.mark.slurm3, pytest.mark.timeout(120)]


def test_workers_on_three_nodes_are_grouped_and_reach_each_other(fresh_slurm: dict[str, str]) -> None:
    nodes = fresh_slurm["CLUSTERCORE_SLURM_NODES"].split()
    assert len(nodes) == 3
    pids = cc.addprocs("slurm", nodes=3, ntasks_per_node=2)
    assert len(pids) == 6
    hosts = {p: cc.remotecall_fetch(socket.gethostname, p) for p in pids}
    assert sorted(set(hosts.values())) == sorted(nodes)
    for p in pids:
        config = worker_info(p).config
        assert config is not None and config.userdata["node"] == hosts[p]
        assert cc.procs(p) == sorted(q for q in pids if hosts[q] == hosts[p])
    first_on = {host: min(p for p in pids if hosts[p] == host) for host in nodes}
    for a in nodes:
        for b in nodes:
            if a != b:
                seen = cc.remotecall_fetch(
                    lambda q: cc.remotecall_fetch(socket.gethostname, q), first_on[a], first_on[b]
                )
                assert seen == b


@pytest.mark.parametrize("distribution", ["block", "cyclic"])
def test_pids_follow_the_nodes_then_the_procids(fresh_slurm: dict[str, str], distribution: str) -> None:
    """pids[0] is the first node's first task, as Julia users expect, however Slurm numbered them."""
    pids = cc.addprocs("slurm", nodes=3, ntasks_per_node=2, srun_flags=[f"--distribution={distribution}"])
    placed = [(cc.worker_info(p).userdata["node"], cc.worker_info(p).userdata["procid"]) for p in pids]
    nodes = sorted({node for node, _ in placed})
    assert [node for node, _ in placed] == [n for n in nodes for _ in range(2)]
    first_on = {node: min(procid for n, procid in placed if n == node) for node in nodes}
    assert placed == sorted(placed, key=lambda np: (first_on[np[0]], np[1]))
    assert [procid for _, procid in placed] == ([0, 1, 2, 3, 4, 5] if distribution == "block" else [0, 3, 1, 4, 2, 5])


def test_a_task_killed_on_another_node(fresh_slurm: dict[str, str]) -> None:
    pids = cc.addprocs("slurm", nodes=3, ntasks_per_node=1)
    hosts = {p: cc.remotecall_fetch(socket.gethostname, p) for p in pids}
    victim = next(p for p in pids if hosts[p] != socket.gethostname())
    ospid = cc.remotecall_fetch(os.getpid, victim)
    call = cc.remotecall(time.sleep, victim, 60)
    os.kill(ospid, signal.SIGKILL)  # the simulated nodes share this machine's pid space
    with pytest.raises(cc.ProcessExitedException):
        call.fetch()
    survivors = [p for p in pids if p != victim]
    assert [cc.remotecall_fetch(socket.gethostname, p) for p in survivors] == [hosts[p] for p in survivors]


def test_driver_in_an_sbatch_script_on_three_nodes(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    result = run_sbatch(tmp_path, "--nodes=3", "--ntasks=3")
    check(result, 3)
    assert len({i["host"] for i in result["info"]}) == 3
    assert result["cross"] in {i["host"] for i in result["info"]}


def test_the_readme_sbatch_example(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    match = re.search(r"## sbatch example\s+```bash\n(.*?)```", readme, re.DOTALL)
    assert match is not None
    script = tmp_path / "job.sh"
    script.write_text(match[1].replace("/path/to/project/.venv/bin/python", sys.executable))
    out = tmp_path / "job.out"
    done = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", "--ntasks-per-node=2", f"--output={out}", f"--chdir={tmp_path}", str(script)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    text = out.read_text() if out.exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + text
    assert "4 workers on ['ccnode1', 'ccnode2']" in text, text
    assert "sum of squares: 14" in text, text
