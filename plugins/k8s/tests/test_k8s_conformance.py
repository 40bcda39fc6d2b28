"""The core's manager conformance suite against K8sManager, from outside the cluster
(port-forward through the API server) and from a driver inside it (pod IPs)."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from clustercore_k8s import K8sManager
from k8s_testing import SMALL, plugin_objects
from real_apiserver import real_mode

import clustercore as cc
from clustercore.testing import ManagerConformance


class TestK8sPortForwardConformance(ManagerConformance):
    pytestmark = pytest.mark.timeout(120)
    api: Any = None
    core: Any = None

    @pytest.fixture(autouse=True)
    def _core(self, k8s_core: Any) -> None:
        self.core = k8s_core

    @pytest.fixture
    def make_manager(self, outside: object, k8s_api: Any) -> Callable[[int], cc.ClusterManager]:
        self.api = k8s_api
        return lambda n: K8sManager(n, **SMALL)

    def leftovers(self, tag: str) -> list[str]:
        """Tagged processes (pods run on this machine), and any pod of the plugin's."""
        pods, _ = plugin_objects(self.core, "pod")
        return super().leftovers(tag) + [f"pod {name}" for name in pods]

    def process_alive(self, hostname: str, ospid: int) -> bool:
        if real_mode():  # under a kubelet a worker's hostname is its pod's name, its pid the pod's own
            return bool(self.api.container_running(hostname))
        return super().process_alive(hostname, ospid)

    def test_killed_worker_raises_process_exited(self, workers: list[int]) -> None:
        if not real_mode():
            super().test_killed_worker_raises_process_exited(workers)
            return
        # Under a kubelet the worker is PID 1 of its container, and the kernel drops a SIGKILL
        # that PID 1 sends itself (the core's version of this test): kill it from the host, as the
        # OOM killer or a node would.
        w = workers[0]
        pod = cc.remotecall_fetch(socket.gethostname, w)
        pending = cc.remotecall(time.sleep, w, 120)
        for pid in self.api.container_pids(pod):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(cc.ProcessExitedException):
            pending.fetch()
        assert w not in cc.procs()
        assert self.wait_gone([(pod, 1)]) == []

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        return [
            lambda: K8sManager(0, image="python:3.11"),
            lambda: K8sManager("2", image="python:3.11"),
            lambda: K8sManager(2),  # no image, and the driver is not in a pod
            lambda: K8sManager(2, image="python:3.11", memory="1GB"),
            lambda: K8sManager(2, image="python:3.11", namespace="Not_A_Namespace"),
            lambda: K8sManager(2, image="python:3.11", min_workers=3),
            lambda: cc.addprocs("k8s", n=2, image="python:3.11", nodez=2),
        ]


class TestK8sInClusterConformance(TestK8sPortForwardConformance):
    @pytest.fixture
    def make_manager(self, inside: object, k8s_api: Any) -> Callable[[int], cc.ClusterManager]:
        self.api = k8s_api
        return lambda n: K8sManager(n, **SMALL)

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        return [call for i, call in enumerate(super().bad_manager_arguments()) if i != 2]  # image may default
