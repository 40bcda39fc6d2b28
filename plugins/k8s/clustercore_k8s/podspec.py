"""The manifests the plugin creates: the worker pod and the cluster's cookie Secret.

A worker pod is built from ``pod_template`` (or nothing), then the plugin
sets what it owns: labels, ``restartPolicy: Never``, the worker container's
command, environment and cpu/memory, then ``configure(pod)`` may change
anything. The cookie is never written into the pod: the container reads it
from the Secret through ``secretKeyRef`` and the wrapper script hands it to
the worker on stdin, so it is in no argv and not in the worker's environment.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clustercore.plugin import worker_command, worker_environment

from .manifests import plain

if TYPE_CHECKING:
    from .manager import K8sManager

Obj = dict[str, Any]

LABEL_PREFIX = "clustercore.io/"
LABEL_CLUSTER = "clustercore.io/cluster"
LABEL_PID = "clustercore.io/worker-pid"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "clustercore"
NAME_PREFIX = "cc-worker-"
CONTAINER = "worker"
COOKIE_ENV = "CLUSTERCORE_COOKIE"
COOKIE_KEY = "cookie"
TERMINATION_GRACE_SECONDS = 10
FIELD_ENV = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}
RESERVED_ENV = (COOKIE_ENV, *FIELD_ENV)

# POSIX sh: the cookie goes from the Secret-backed variable to the worker's stdin through a
# here-document, then `exec` replaces the shell, so the cookie is in no argv and, being unset
# first, not in the worker's environment. No `$(`: Kubernetes would expand it in `command`.
WORKER_SCRIPT = 'c=$CLUSTERCORE_COOKIE; unset CLUSTERCORE_COOKIE\nexec "$0" "$@" <<EOF\n$c\nEOF\n'


def cluster_selector(cluster_id: str | None = None) -> str:
    """The label selector of everything the plugin created (in one cluster, if given)."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    return f"{selector},{LABEL_CLUSTER}={cluster_id}" if cluster_id else selector


def plugin_labels(cluster_id: str, component: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: component, LABEL_CLUSTER: cluster_id}


def pod_command(params: dict[str, Any]) -> list[str]:
    """``sh -c WORKER_SCRIPT <worker argv>``: the worker listens on 0.0.0.0, any port."""
    return ["sh", "-c", WORKER_SCRIPT, *worker_command(params, bind_to="0.0.0.0")]


def cookie_secret(name: str, cluster_id: str, cookie: str, owner: Obj | None) -> Obj:
    metadata: Obj = {"name": name, "labels": plugin_labels(cluster_id, "cookie")}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {COOKIE_KEY: base64.b64encode(cookie.encode()).decode()},
    }


@dataclass(frozen=True)
class PodContext:
    """What the worker pod depends on besides the manager's options."""

    cluster_id: str
    secret_name: str
    default_image: str | None = None
    owner: Obj | None = None


def worker_pod(manager: K8sManager, params: dict[str, Any], ctx: PodContext) -> Obj:
    """The manifest every worker pod of one launch is created from."""
    pod: Obj = plain(manager.pod_template) if manager.pod_template is not None else {}
    pod.pop("status", None)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    _metadata(pod, manager, ctx)
    spec = pod["spec"] = pod.get("spec") or {}
    _spec(spec, manager)
    _container(_worker_container(spec), manager, params, ctx)
    if manager.configure is not None:
        changed = manager.configure(pod)
        pod = plain(changed if changed is not None else pod)
        check_configured(pod, ctx.cluster_id)
    return pod


def _metadata(pod: Obj, manager: K8sManager, ctx: PodContext) -> None:
    meta = pod["metadata"] = pod.get("metadata") or {}
    name = meta.pop("name", None)
    if not meta.get("generateName"):
        meta["generateName"] = f"{name}-" if name else NAME_PREFIX
    for key in ("namespace", "uid", "resourceVersion", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    meta["labels"] = {**(meta.get("labels") or {}), **(manager.labels or {}), **plugin_labels(ctx.cluster_id, "worker")}
    if ctx.owner:
        meta["ownerReferences"] = [*(meta.get("ownerReferences") or []), ctx.owner]


def _spec(spec: Obj, manager: K8sManager) -> None:
    spec["restartPolicy"] = "Never"  # a restarted worker would be a stranger with a new port
    spec.setdefault("terminationGracePeriodSeconds", TERMINATION_GRACE_SECONDS)
    if manager.service_account:
        spec["serviceAccountName"] = manager.service_account
    elif not spec.get("serviceAccountName"):
        spec.setdefault("automountServiceAccountToken", False)  # workers need no API access
    if manager.node_selector:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **manager.node_selector}
    if manager.tolerations:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *manager.tolerations]


def _worker_container(spec: Obj) -> Obj:
    containers = spec.setdefault("containers", [])
    for container in containers:
        if container.get("name") == CONTAINER:
            return container  # type: ignore[no-any-return]
    if containers:
        return containers[0]  # type: ignore[no-any-return]
    containers.append({"name": CONTAINER})
    return containers[0]  # type: ignore[no-any-return]


def _container(container: Obj, manager: K8sManager, params: dict[str, Any], ctx: PodContext) -> None:
    image = manager.image or container.get("image") or ctx.default_image
    if not image:
        raise ValueError(
            "K8sManager needs image=... for the worker pods: the driver runs in a pod, but that pod "
            "(named by POD_NAME, else HOSTNAME) could not be read to take its image"
        )
    container["image"] = image
    if manager.image_pull_policy:
        container["imagePullPolicy"] = manager.image_pull_policy
    container["command"] = pod_command(params)
    container.pop("args", None)  # they would be appended to the worker's argv
    if params.get("dir"):
        container["workingDir"] = str(params["dir"])
    ours = _env(params, manager, ctx.secret_name)
    names = {e["name"] for e in ours}
    container["env"] = [e for e in container.get("env") or [] if e.get("name") not in names] + ours
    resources = container.get("resources") or {}
    for kind, attr in (("requests", "request"), ("limits", "limit")):
        values = dict(resources.get(kind) or {})
        for name in ("cpu", "memory"):
            quantity = getattr(getattr(manager, name), attr)
            if quantity is not None:
                values[name] = quantity
        if values:
            resources[kind] = values
    if resources:
        container["resources"] = resources


def _env(params: dict[str, Any], manager: K8sManager, secret_name: str) -> list[Obj]:
    values = {**worker_environment(params), **(manager.env or {})}
    env: list[Obj] = [
        {"name": COOKIE_ENV, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": COOKIE_KEY}}},
        *({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in FIELD_ENV.items()),
    ]
    return env + [{"name": k, "value": v} for k, v in values.items() if k not in RESERVED_ENV]


def check_configured(pod: Obj, cluster_id: str) -> None:
    """What ``configure`` must leave alone for the plugin to find and run its workers."""
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        raise TypeError("configure(pod) must return a pod manifest (dict or V1Pod), or None to keep its changes")
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_CLUSTER) != cluster_id or labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        raise ValueError(f"configure(pod) must keep the labels {LABEL_CLUSTER} and {LABEL_MANAGED_BY}")
    if pod["spec"].get("restartPolicy") != "Never":
        raise ValueError("configure(pod) must keep restartPolicy: Never (a restarted worker cannot rejoin)")
