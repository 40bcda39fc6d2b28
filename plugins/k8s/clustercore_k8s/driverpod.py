"""The driver's own pod, when it runs in one: the default image, and the owner of what it creates.

Worker pods and the cookie Secret get an ownerReference to the driver's pod,
so that Kubernetes' garbage collector removes them when the driver's pod
goes, even if the driver crashed. Owners must live in the same namespace
as their dependents, so a cluster in another namespace gets no reference.
"""

from __future__ import annotations

import logging
from typing import Any

from . import placement
from .kubeapi import KubeApi

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def find(api: KubeApi) -> Obj | None:
    """The pod this process runs in (``POD_NAME``, else ``HOSTNAME``), if it can be read."""
    if not placement.in_pod():
        return None
    name = placement.own_pod_name()
    namespace = placement.pod_namespace()
    if not name or not namespace:
        return None
    try:
        return api.read_pod(name, namespace)
    except Exception as exc:  # noqa: BLE001 - e.g. no RBAC to read it: no owner, no default image
        log.warning("cannot read the driver's pod %s/%s: %s", namespace, name, exc)
        return None


def image(pod: Obj | None) -> str | None:
    """The image of the driver pod's first container."""
    containers = ((pod or {}).get("spec") or {}).get("containers") or []
    return str(containers[0]["image"]) if containers and containers[0].get("image") else None


def owner_reference(pod: Obj | None, namespace: str) -> Obj | None:
    """An ownerReference to the driver's pod, for objects created in ``namespace``."""
    if pod is None:
        return None
    meta = pod["metadata"]
    if meta.get("namespace") != namespace:
        log.info(
            "the driver's pod is in namespace %s, the workers in %s: no ownerReference",
            meta.get("namespace"),
            namespace,
        )
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
