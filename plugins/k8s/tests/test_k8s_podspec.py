"""The worker pod manifest (template, configure, what the plugin owns) and the reason texts,
without an API server."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from clustercore_k8s import K8sManager
from clustercore_k8s.podspec import LABEL_CLUSTER, WORKER_SCRIPT, PodContext, worker_pod
from clustercore_k8s.reasons import pending_reason, termination_reason
from kubernetes import client

from clustercore.testing import launch_params

CTX = PodContext("c0ffee00", "cc-cookie-c0ffee00")
PARAMS = launch_params(env={"FROM_ADDPROCS": "1"})


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "worker"]
    return container


def test_defaults() -> None:
    pod = worker_pod(K8sManager(1, image="img:1"), PARAMS, CTX)
    assert pod["metadata"]["generateName"] == "cc-worker-" and pod["metadata"]["labels"][LABEL_CLUSTER] == "c0ffee00"
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["terminationGracePeriodSeconds"] == 10
    c = _container(pod)
    assert c["command"] == [
        "sh",
        "-c",
        WORKER_SCRIPT,
        sys.executable,
        "-m",
        "clustercore",
        "worker",
        "--bind-to",
        "0.0.0.0",
    ]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    env = {e["name"]: e for e in c["env"]}
    assert env["CLUSTERCORE_COOKIE"] == {
        "name": "CLUSTERCORE_COOKIE",
        "valueFrom": {"secretKeyRef": {"name": "cc-cookie-c0ffee00", "key": "cookie"}},
    }
    assert (
        env["FROM_ADDPROCS"]["value"] == "1" and env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    )


def test_exename_and_requests_without_limits() -> None:
    manager = K8sManager(1, image="img:1", cpu=("250m", None), memory=None)
    pod = worker_pod(manager, {**PARAMS, "exename": "python3", "exeflags": ("-X", "dev")}, CTX)
    c = _container(pod)
    assert c["command"][3:] == ["python3", "-X", "dev", "-m", "clustercore", "worker", "--bind-to", "0.0.0.0"]
    assert c["resources"] == {"requests": {"cpu": "250m"}}


def test_template_is_the_base_and_the_plugin_sets_what_it_owns() -> None:
    template = {
        "metadata": {"name": "gpu-worker", "labels": {"app": "train"}, "annotations": {"a": "b"}},
        "spec": {
            "restartPolicy": "Always",
            "serviceAccountName": "trainer",
            "nodeSelector": {"pool": "gpu"},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "sidecar", "image": "proxy:1"},
                {
                    "name": "worker",
                    "image": "train:2",
                    "args": ["--ignored"],
                    "env": [{"name": "KEEP", "value": "yes"}, {"name": "OMP_NUM_THREADS", "value": "8"}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
            ],
        },
    }
    manager = K8sManager(1, pod_template=template, cpu="2", node_selector={"zone": "a"}, labels={"team": "ml"})
    pod = worker_pod(manager, PARAMS, CTX)
    meta, spec = pod["metadata"], pod["spec"]
    assert "name" not in meta and meta["generateName"] == "gpu-worker-" and meta["annotations"] == {"a": "b"}
    assert meta["labels"]["app"] == "train" and meta["labels"]["team"] == "ml"
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "trainer"
    assert "automountServiceAccountToken" not in spec  # the template chose a service account
    assert spec["nodeSelector"] == {"pool": "gpu", "zone": "a"} and spec["volumes"] == template["spec"]["volumes"]
    assert spec["containers"][0] == {"name": "sidecar", "image": "proxy:1"}
    c = _container(pod)
    assert c["image"] == "train:2" and "args" not in c and c["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "2", "memory": "1Gi"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KEEP"] == "yes" and env["OMP_NUM_THREADS"] == "1"  # the plugin's (addprocs') value wins
    assert template["spec"]["containers"][1]["args"] == ["--ignored"]  # the template itself is untouched


def test_v1pod_template_and_configure() -> None:
    template = client.V1Pod(
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="worker", image="img:3")],
            priority_class_name="batch",
        )
    )

    def configure(pod: dict[str, Any]) -> client.V1Pod:
        pod["spec"]["affinity"] = {"podAntiAffinity": {}}
        return client.ApiClient().deserialize(json.dumps(pod), "V1Pod", "application/json")  # a model back

    pod = worker_pod(K8sManager(1, pod_template=template, configure=configure), PARAMS, CTX)
    assert pod["spec"]["priorityClassName"] == "batch" and pod["spec"]["affinity"] == {"podAntiAffinity": {}}
    assert _container(pod)["image"] == "img:3"


def test_configure_may_edit_in_place() -> None:
    def configure(pod: dict[str, Any]) -> None:
        pod["spec"]["runtimeClassName"] = "gvisor"

    pod = worker_pod(K8sManager(1, image="img:1", configure=configure), PARAMS, CTX)
    assert pod["spec"]["runtimeClassName"] == "gvisor"


@pytest.mark.parametrize(
    "breaks",
    [
        lambda pod: pod["spec"].update(restartPolicy="OnFailure"),
        lambda pod: pod["metadata"]["labels"].clear(),
    ],
)
def test_configure_must_keep_what_the_plugin_needs(breaks: Any) -> None:
    with pytest.raises(ValueError, match="configure"):
        worker_pod(K8sManager(1, image="img:1", configure=breaks), PARAMS, CTX)


def _pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "cc-worker-ab12c", **meta}, "status": status}


def _terminated(reason: str, code: int, phase: str = "Failed") -> dict[str, Any]:
    state = {"terminated": {"reason": reason, "exitCode": code}}
    return {"phase": phase, "containerStatuses": [{"name": "worker", "state": state}]}


def test_termination_reasons() -> None:
    assert termination_reason(_pod({"phase": "Running"})) is None
    assert termination_reason(_pod(_terminated("OOMKilled", 137))) == "pod cc-worker-ab12c OOMKilled (exit code 137)"
    assert termination_reason(_pod(_terminated("Completed", 0, "Succeeded"))) == (
        "pod cc-worker-ab12c Completed (exit code 0)"
    )
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
    assert termination_reason(_pod(evicted)) == "pod cc-worker-ab12c Evicted: The node was low on resource: memory."
    deleting = _pod({"phase": "Running"}, deletionTimestamp="2026-01-01T00:00:00Z")
    assert termination_reason(deleting) == "pod cc-worker-ab12c was deleted"
    assert termination_reason(_pod({"phase": "Running"}), deleted=True) == "pod cc-worker-ab12c was deleted"


def test_pending_reasons() -> None:
    events = [
        {"type": "Normal", "reason": "Pulling", "message": "Pulling image", "lastTimestamp": "2026-01-01T00:00:02Z"},
        {
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
            "lastTimestamp": "2026-01-01T00:00:01Z",
        },
    ]
    assert pending_reason(_pod({"phase": "Pending"}), events) == (
        "FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu."
    )
    assert pending_reason(_pod({"phase": "Pending"}), events[:1]) == "Pulling: Pulling image"
    waiting = {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "worker",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
            }
        ],
    }
    assert pending_reason(_pod(waiting), []) == "ImagePullBackOff: Back-off pulling image"
