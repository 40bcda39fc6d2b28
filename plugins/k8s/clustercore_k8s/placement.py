"""Where the driver runs: in a pod (with a service account) or outside the cluster.

Only the environment and the service-account files are consulted, so this
answers before any API call. The file locations come from
``kubernetes.config.incluster_config`` (imported on first use).
"""

from __future__ import annotations

import os


def service_account_dir() -> str:
    """The directory of the pod's service-account token (namespace, ca.crt beside it)."""
    from kubernetes.config import incluster_config

    return os.path.dirname(incluster_config.SERVICE_TOKEN_FILENAME)


def in_pod() -> bool:
    """True when this process runs in a pod that can reach the API server with its service account."""
    if not (os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT")):
        return False
    from kubernetes.config import incluster_config

    return os.path.isfile(incluster_config.SERVICE_TOKEN_FILENAME)


def pod_namespace() -> str | None:
    """The namespace of the pod this process runs in (from the service-account mount)."""
    try:
        with open(os.path.join(service_account_dir(), "namespace")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def own_pod_name() -> str | None:
    """This pod's name: ``POD_NAME`` (set it with the downward API) or ``HOSTNAME`` (the default hostname)."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or None
