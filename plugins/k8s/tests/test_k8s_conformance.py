"""The core's manager conformance suite against K8sManager, from outside the cluster
(port-forward through the API server) and from a driver inside it (pod IPs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from clustercore_k8s import K8sManager
from k8s_testing import SMALL

import clustercore as cc
from clustercore.testing import ManagerConformance


class TestK8sPortForwardConformance(ManagerConformance):
    pytestmark = pytest.mark.timeout(120)

    @pytest.fixture
    def make_manager(self, outside: object) -> Callable[[int], cc.ClusterManager]:
        return lambda n: K8sManager(n, **SMALL)

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
    def make_manager(self, inside: object) -> Callable[[int], cc.ClusterManager]:
        return lambda n: K8sManager(n, **SMALL)

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        return [call for i, call in enumerate(super().bad_manager_arguments()) if i != 2]  # image may default
