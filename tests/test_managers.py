"""Cluster managers defined in user code, custom transports, and plugin discovery."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from threading import Condition
from typing import Any

import pytest

import clustercore as cc
from clustercore.engine.launching import worker_command, worker_environment
from clustercore.testing import wait_until_gone

from .uds_manager import UDSManager


class MinimalManager(cc.ClusterManager):
    """Overrides only launch and manage: connect and kill are the defaults."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.ops: list[tuple[int, str]] = []

    def launch(self, params: dict[str, Any], launched: list[cc.WorkerConfig], launch_ntfy: Condition) -> None:
        for _ in range(self.n):
            proc = subprocess.Popen(
                worker_command(params),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **worker_environment(params)},
            )
            assert proc.stdin is not None
            proc.stdin.write((cc.cluster_cookie() + "\n").encode())
            proc.stdin.close()
            with launch_ntfy:
                launched.append(cc.WorkerConfig(io=proc.stdout, process=proc))
                launch_ntfy.notify_all()

    def manage(self, id: int, config: cc.WorkerConfig, op: str) -> None:
        self.ops.append((id, op))


def test_a_manager_in_user_code_needs_only_launch_and_manage(fresh: None) -> None:
    manager = MinimalManager(2)
    pids = cc.addprocs(manager)
    ospids = [cc.remotecall_fetch(os.getpid, p) for p in pids]
    assert cc.remotecall_fetch(lambda o: cc.remotecall_fetch(cc.myid, o), pids[0], pids[1]) == pids[1]
    cc.interrupt(pids[0])
    cc.rmprocs(pids)
    assert wait_until_gone(ospids) == []
    assert [op for p, op in manager.ops if p == pids[0]] == ["register", "interrupt", "deregister", "finalize"]
    assert [op for p, op in manager.ops if p == pids[1]] == ["register", "deregister", "finalize"]


def test_a_custom_transport_over_unix_sockets(fresh: None) -> None:
    manager = UDSManager(np=2)
    a, b = cc.addprocs(manager)
    assert manager.connects == 2
    assert cc.remotecall_fetch(cc.myid, a) == a
    assert cc.remotecall_fetch(lambda o: cc.remotecall_fetch(cc.myid, o), a, b) == b
    assert manager.connects == 2  # the worker-to-worker link was made on the worker, by its manager
    assert cc.remotecall_fetch(lambda: type(cc.engine.cluster.PGRP.manager).__name__, a) == "UDSManager"
    np = pytest.importorskip("numpy")
    big = np.arange(1_000_000)
    assert np.array_equal(cc.remotecall_fetch(lambda x: x + 1, b, big), big + 1)


class FailingLaunch(cc.ClusterManager):
    def launch(self, params: dict[str, Any], launched: list[cc.WorkerConfig], launch_ntfy: Condition) -> None:
        raise RuntimeError("no machines today")

    def manage(self, id: int, config: cc.WorkerConfig, op: str) -> None:
        pass


def test_a_failing_launch_raises_its_error(fresh: None) -> None:
    with pytest.raises(RuntimeError, match="no machines today"):
        cc.addprocs(FailingLaunch())
    assert cc.procs() == [1]


class SilentWorker(MinimalManager):
    """Starts a process that never prints its address."""

    def launch(self, params: dict[str, Any], launched: list[cc.WorkerConfig], launch_ntfy: Condition) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", "print('booting', flush=True); import sys; sys.exit(3)"], stdout=subprocess.PIPE
        )
        with launch_ntfy:
            launched.append(cc.WorkerConfig(io=proc.stdout, process=proc))
            launch_ntfy.notify_all()


def test_a_worker_that_dies_before_its_address_is_diagnosed(fresh: None) -> None:
    with pytest.raises(ConnectionError, match=r"exited before printing its address.*booting"):
        cc.addprocs(SilentWorker(1))
    assert cc.procs() == [1]


def test_a_manager_without_launch_is_a_clear_error(fresh: None) -> None:
    class Nothing(cc.ClusterManager):
        pass

    with pytest.raises(NotImplementedError, match="Nothing does not implement 'launch'"):
        cc.addprocs(Nothing())


def _run(
    args: list[str], env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_import_is_lazy_about_plugins() -> None:
    prefixes = ("clustercore_", "paramiko", "kubernetes")
    code = f"import sys, clustercore; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    result = _run([sys.executable, "-c", code])
    assert result.stdout.strip() == "[]", result.stderr


@pytest.fixture
def broken_plugin(tmp_path: Path) -> dict[str, str]:
    """A distribution whose clustercore entry point fails to import."""
    dist = tmp_path / "clustercore_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clustercore-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[clustercore]\nbroken = broken_plugin_module\n")
    (tmp_path / "broken_plugin_module.py").write_text("raise ImportError('this plugin is broken on purpose')\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_managers_command_lists_plugins_and_survives_a_broken_one(broken_plugin: dict[str, str]) -> None:
    result = _run([sys.executable, "-m", "clustercore", "managers"], env=broken_plugin)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "distribution", "version", "managers"]
    assert any(line.split()[:4] == ["local", "clustercore-local", "0.1.0", "local"] for line in lines)
    assert any(line.startswith("broken") and "failed to load" in line for line in lines)
    assert "clustercore plugin 'broken' (clustercore-broken 0.1) failed to load" in result.stderr


def test_addprocs_works_beside_a_broken_plugin(broken_plugin: dict[str, str]) -> None:
    code = (
        "import clustercore as cc; p = cc.addprocs(1); print(cc.remotecall_fetch(cc.myid, p[0]))\n"
        "try:\n    cc.addprocs('broken')\nexcept ValueError as e:\n    print(e)"
    )
    result = _run([sys.executable, "-c", code], env=broken_plugin)
    assert result.returncode == 0, result.stderr
    first, error = result.stdout.strip().splitlines()
    assert first == "2"
    assert "no cluster manager named 'broken'" in error
    assert "its plugin failed to load: ImportError('this plugin is broken on purpose')" in error
    assert "clustercore plugin 'broken' (clustercore-broken 0.1) failed to load" in result.stderr


def test_addprocs_loads_only_the_plugin_it_needs() -> None:
    prefixes = ("clustercore_", "paramiko", "kubernetes")
    code = (
        "import sys, clustercore as cc; cc.addprocs(1)\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules if m.startswith({prefixes!r})}}))\n"
        "cc.engine.hooks.manager_types()\n"
        f"print(sorted({{m.partition('.')[0] for m in sys.modules if m.startswith({prefixes!r})}}))"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    only_local, everything = result.stdout.splitlines()
    assert only_local == "['clustercore_local']"
    all_plugins = {"clustercore_local", "clustercore_ssh", "clustercore_slurm", "clustercore_k8s"}
    assert all_plugins <= set(ast.literal_eval(everything))


def test_cli_runs_a_script_with_workers(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import sys, clustercore as cc
        print(cc.nworkers(), sys.argv[1:], cc.remotecall_fetch(lambda: cc.myid(), cc.workers()[-1]))
        """)
    )
    result = _run([sys.executable, "-m", "clustercore", "-p", "2", str(script), "a", "--b"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 ['a', '--b'] 3"
    bad = _run([sys.executable, "-m", "clustercore", "-p", "zero", str(script)])
    assert bad.returncode == 2 and "-p takes a positive number" in bad.stderr
