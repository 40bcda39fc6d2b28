"""Helpers for the plugin's tests: the image name, small workers, a CPU request of which two pods
fit on the node, and a watch-driven check that nothing is left."""

from __future__ import annotations

import os
from typing import Any

from clustercore_k8s.podspec import cluster_selector
from kubernetes import client, watch
from kubernetes.utils import parse_quantity
from real_apiserver import real_mode

IMAGE = "python:3.11"
NS = "default"
# requests small enough for 8 workers on a 2-CPU node (the real kubelet's); limited to 1 CPU
SMALL: dict[str, Any] = {"image": IMAGE, "cpu": ("100m", "1"), "memory": "512Mi"}


def two_fit_cpu(core: client.CoreV1Api) -> str:
    """A CPU request of which two pods fit on the one node and a third does not."""
    if not real_mode():
        return "3"  # the fake's node has 8 CPUs
    node = core.read_node(os.environ["CLUSTERCORE_K8S_NODE"])
    millis = int(parse_quantity(node.status.allocatable["cpu"]) * 1000)
    return f"{millis * 2 // 5}m"  # two take 80 %


def plugin_objects(core: client.CoreV1Api, kind: str = "pod", ns: str = NS) -> tuple[list[str], str]:
    """Names of the plugin's pods (or secrets) and the list's resourceVersion."""
    found = getattr(core, f"list_namespaced_{kind}")(ns, label_selector=cluster_selector())
    return sorted(o.metadata.name for o in found.items), found.metadata.resource_version


def wait_none_of(core: client.CoreV1Api, kind: str, ns: str = NS, timeout: int = 60) -> list[str]:
    """Watch until no pod (or secret) of the plugin exists; the names still there after ``timeout``."""
    names, version = plugin_objects(core, kind, ns)
    left = set(names)
    if not left:
        return []
    w: Any = watch.Watch()
    lister = getattr(core, f"list_namespaced_{kind}")
    for event in w.stream(
        lister, ns, label_selector=cluster_selector(), resource_version=version, timeout_seconds=timeout
    ):
        name = event["object"].metadata.name
        if event["type"] == "DELETED":
            left.discard(name)
        elif event["type"] == "ADDED":
            left.add(name)
        if not left:
            w.stop()
    return sorted(left)


def wait_none_left(core: client.CoreV1Api, ns: str = NS, timeout: int = 60) -> tuple[list[str], list[str]]:
    """``([], [])`` once the plugin has no pod and no Secret left in ``ns``."""
    return wait_none_of(core, "pod", ns, timeout), wait_none_of(core, "secret", ns, timeout)
