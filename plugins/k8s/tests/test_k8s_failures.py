"""Failures a real cluster produces, checked against the fake and (``make test-k8s``) the real
control plane: scheduling refusals worded by the scheduler, an image that cannot be pulled,
OOMKilled through both call forms, RBAC refusals, and start-up against bare pods."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from clustercore_k8s import K8sError, K8sLaunchError, PodWarning
from fake_apiserver.clientside import python_pod, wait_gone
from k8s_testing import IMAGE, NS, SMALL, plugin_objects
from kubernetes import client, watch
from real_apiserver import real_mode

import clustercore as cc

pytestmark = pytest.mark.timeout(120)
UNPULLABLE = "registry.invalid/team/worker:1"  # RFC 2606: no registry can ever answer there


def _hog() -> int:
    hog = b"x" * (400 << 20)  # written, so resident: well over the 200Mi limit
    time.sleep(60)
    return len(hog)


def test_node_selector_nobody_matches(outside: object) -> None:
    with pytest.warns(PodWarning), pytest.raises(K8sLaunchError) as info:
        cc.addprocs("k8s", n=1, node_selector={"disktype": "ssd"}, pending_timeout=3, **SMALL)
    assert "FailedScheduling: 0/1 nodes are available: 1 node(s) didn't match" in str(info.value)
    assert cc.procs() == [1]


def test_an_image_that_cannot_be_pulled(outside: object) -> None:
    with pytest.warns(PodWarning), pytest.raises(K8sLaunchError) as info:
        cc.addprocs("k8s", n=1, image=UNPULLABLE, cpu="500m", memory="256Mi", pending_timeout=5)
    text = str(info.value)
    assert "only 0 of 1" in text and re.search(r"Failed to pull image|ErrImagePull|ImagePullBackOff", text), text
    assert cc.procs() == [1]


def test_oomkilled_through_remotecall_fetch(outside: object, k8s_core: client.CoreV1Api) -> None:
    (pid,) = cc.addprocs("k8s", n=1, image=IMAGE, cpu="500m", memory="200Mi")
    with pytest.raises(cc.ProcessExitedException) as info:
        cc.remotecall_fetch(_hog, pid)
    assert "OOMKilled (exit code 137)" in str(info.value)


@pytest.fixture
def tester_kubeconfig(outside: Path, tmp_path: Path) -> Path:
    """A kubeconfig for the user ``cc-tester``, whom RBAC grants nothing (real server only)."""
    if not real_mode():
        pytest.skip("the fake has no authorization")
    import os

    tokens = Path(os.environ["CLUSTERCORE_K8S_TOKENS"]).read_text().split("\n")[0]
    token = tokens.split(",")[0]
    config = json.loads(outside.read_text()) if outside.read_text().lstrip().startswith("{") else None
    if config is None:
        import yaml

        config = yaml.safe_load(outside.read_text())
    config["users"][0]["user"] = {"token": token}
    path = tmp_path / "tester"
    path.write_text(json.dumps(config))
    return path


def test_a_missing_permission_names_the_verb_and_the_resource(tester_kubeconfig: Path) -> None:
    with pytest.raises(K8sError) as info:
        cc.addprocs("k8s", n=1, kubeconfig=str(tester_kubeconfig), **SMALL)
    assert re.search(r'403 Forbidden: \w+ is forbidden: User "cc-tester" cannot \w+ resource "\w+"', str(info.value))
    assert cc.procs() == [1]


@pytest.mark.slow
def test_startup_of_8_workers_against_bare_pods(outside: object, k8s_core: client.CoreV1Api) -> None:
    """Not a timing assertion: both numbers are printed, measured in the same run."""
    n = 8
    start = time.monotonic()
    names = []
    for i in range(n):
        pod = python_pod(f"bare-{i}", "import time; time.sleep(60)", resources=_small_resources())
        names.append(k8s_core.create_namespaced_pod(NS, pod).metadata.name)
    running: set[str] = set()
    w: Any = watch.Watch()
    for event in w.stream(k8s_core.list_namespaced_pod, NS, timeout_seconds=60):
        pod = event["object"]
        if pod.metadata.name in names and pod.status.phase == "Running":
            running.add(pod.metadata.name)
            if len(running) == n:
                w.stop()
    bare = time.monotonic() - start
    assert len(running) == n
    for name in names:
        k8s_core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    for name in names:
        wait_gone(k8s_core, name, timeout=60)

    start = time.monotonic()
    pids = cc.addprocs("k8s", n=n, **SMALL)
    workers = time.monotonic() - start
    assert len(pids) == n and len(plugin_objects(k8s_core)[0]) == n
    print(f"\n8 bare pods Running: {bare:.2f} s; cc.addprocs('k8s', n=8): {workers:.2f} s ({workers / bare:.2f}x)")


def _small_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
