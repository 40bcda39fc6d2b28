"""``clustercore k8s cleanup`` after a driver died without cleaning up (outside a pod, so no
ownerReferences): it removes that cluster's pods and Secret by label, and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_apiserver.clientside import python_pod, wait_phase
from k8s_testing import NS, plugin_objects, wait_none_left
from kubernetes import client

from clustercore.testing import cli_commands

pytestmark = pytest.mark.timeout(120)

CRASHING_DRIVER = """
import os, clustercore as cc
from clustercore.testing import worker_info
pids = cc.addprocs("k8s", n=2, image="python:3.11", cpu="500m", memory="256Mi")
print(worker_info(pids[0]).config.process.session.cluster_id, flush=True)
os._exit(1)  # no atexit handlers: its pods and cookie Secret stay behind
"""


EXITING_DRIVER = """
import clustercore as cc
pids = cc.addprocs("k8s", n=2, image="python:3.11", cpu="500m", memory="256Mi")
assert cc.remotecall_fetch(cc.myid, pids[1]) == pids[1]
"""  # and exits without rmprocs


def _cli(*args: str) -> str:
    command = Path(sys.executable).with_name("clustercore")
    done = subprocess.run([str(command), "k8s", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cleanup_removes_a_dead_drivers_leftovers(
    outside: Path, k8s_core: client.CoreV1Api, capsys: pytest.CaptureFixture[str]
) -> None:
    k8s_core.create_namespaced_pod(NS, python_pod("bystander", "import time; time.sleep(120)"))
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_DRIVER], capture_output=True, text=True, timeout=60, check=False
    )
    assert crashed.returncode == 1, crashed.stderr
    cluster_id = crashed.stdout.split()[0]
    pods, secrets = plugin_objects(k8s_core)[0], plugin_objects(k8s_core, "secret")[0]
    assert len(pods) == 2 and secrets == [f"cc-cookie-{cluster_id}"]

    listed = _cli("cleanup", "--dry-run")
    assert sorted(listed.splitlines()) == sorted(
        [f"would delete pod {NS}/{p} (cluster {cluster_id})" for p in pods]
        + [f"would delete secret {NS}/{secrets[0]} (cluster {cluster_id})"]
    )
    assert _cli("cleanup", "--cluster-id", "00000000") == f"nothing to clean up in namespace {NS}\n"
    assert len(plugin_objects(k8s_core)[0]) == 2

    assert cli_commands()["k8s"](["cleanup", "--cluster-id", cluster_id]) == 0  # `clustercore k8s`: the hook
    assert f"deleted secret {NS}/{secrets[0]}" in capsys.readouterr().out
    assert wait_none_left(k8s_core) == ([], [])
    assert wait_phase(k8s_core, "bystander", "Running").metadata.name == "bystander"  # not ours: untouched
    k8s_core.delete_namespaced_pod("bystander", NS, grace_period_seconds=0)


def test_cleanup_reports_a_missing_configuration(
    k8s_clean: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli_commands()["k8s"](["cleanup"]) == 1
    assert "cannot use the kubeconfig" in capsys.readouterr().err


def test_a_driver_that_just_exits_leaves_nothing(outside: Path, k8s_core: client.CoreV1Api) -> None:
    done = subprocess.run([sys.executable, "-c", EXITING_DRIVER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert plugin_objects(k8s_core)[0] == [] and plugin_objects(k8s_core, "secret")[0] == []
