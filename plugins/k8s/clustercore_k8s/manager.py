"""``K8sManager``: workers as Kubernetes pods.

Its fields are the ``addprocs("k8s", ...)`` keywords; ``__post_init__``
checks them all before anything talks to the API server. The runtime side
(API connection, cookie Secret, pod watch, which pod is which worker) is a
:class:`~clustercore_k8s.session.Session`, opened by the first launch and
closed when the last of its workers is gone; it is not a field.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from clustercore.plugin import ClusterManager

from . import options, placement
from .manifests import plain
from .podspec import LABEL_PREFIX, RESERVED_ENV

if TYPE_CHECKING:
    from .session import Session

Quantity = str | int | float
ResourceArg = Quantity | tuple[Quantity | None, Quantity | None] | None


@dataclass(eq=False)
class K8sManager(ClusterManager):
    """Start ``n`` workers, one per pod.

    ``image`` defaults to the driver's own image when the driver runs in a
    pod; outside a cluster it is required. ``cpu``/``memory`` are quantities
    (requests = limits) or ``(request, limit)`` pairs; ``None`` leaves them to
    ``pod_template``. ``env``, ``service_account``, ``node_selector``,
    ``tolerations``, ``image_pull_policy`` and ``labels`` go to every pod;
    ``pod_template`` (a pod manifest dict or ``V1Pod``) and ``configure``
    (``pod dict -> pod``, called last) set anything else. A pod still Pending
    after ``pending_timeout`` seconds is deleted with a warning; the launch
    fails if fewer than ``min_workers`` (default 1) start. ``kubeconfig`` and
    ``context`` pick the cluster as kubectl would; ``transport`` is
    ``"pod-ip"`` (in-cluster), ``"port-forward"`` (through the API server),
    or ``"auto"``: the pod IP when using the pod's service account.
    """

    n: int
    image: str | None = None
    namespace: str | None = None
    cpu: ResourceArg = "1"
    memory: ResourceArg = "1Gi"
    env: Mapping[str, str] | None = None
    service_account: str | None = None
    node_selector: Mapping[str, str] | None = None
    tolerations: Sequence[Any] | None = None
    image_pull_policy: str | None = None
    labels: Mapping[str, str] | None = None
    pod_template: Any = None
    configure: Callable[[dict[str, Any]], Any] | None = None
    pending_timeout: float | None = 300.0
    min_workers: int | None = None
    kubeconfig: str | PathLike[str] | None = None
    context: str | None = None
    transport: str = "auto"

    def __post_init__(self) -> None:
        self.n = options.positive_int("n", self.n)  # type: ignore[assignment]
        self.image = options.image(self.image)
        self.namespace = options.dns_label("namespace", self.namespace)
        self.cpu = options.resource("cpu", self.cpu)  # type: ignore[assignment]
        self.memory = options.resource("memory", self.memory)  # type: ignore[assignment]
        self.env = options.env(self.env, reserved=RESERVED_ENV)
        self.service_account = options.dns_subdomain("service_account", self.service_account)
        self.node_selector = options.labels("node_selector", self.node_selector)
        self.tolerations = options.tolerations(self.tolerations, plain)
        self.image_pull_policy = options.pull_policy(self.image_pull_policy)
        self.labels = options.labels("labels", self.labels, reserved_prefix=LABEL_PREFIX)
        self.pod_template = options.pod_template(self.pod_template)
        self.configure = options.callable_or_none("configure", self.configure)
        self.pending_timeout = options.seconds("pending_timeout", self.pending_timeout)
        self.min_workers = options.positive_int("min_workers", self.min_workers, optional=True)
        if self.min_workers is not None and self.min_workers > self.n:
            raise ValueError(f"min_workers ({self.min_workers}) cannot be more than n ({self.n})")
        self.kubeconfig = options.path("kubeconfig", self.kubeconfig)
        self.context = options.text("context", self.context)
        self.transport = options.transport(self.transport)
        if self.image is None and not _template_has_image(self.pod_template) and not placement.in_pod():
            raise ValueError(
                "K8sManager needs image=...: the driver does not run in a pod, so there is no image to "
                "default to. Use an image with Python, clustercore and its plugins installed (and pass "
                "exename='python3' or the like: the default exename is this machine's sys.executable)"
            )
        self.session: Session | None = None  # runtime state, not an option
        self.session_lock = threading.Lock()

    @property
    def required_workers(self) -> int:
        return self.min_workers or 1


def _template_has_image(template: Any) -> bool:
    if template is None:
        return False
    containers = ((plain(template).get("spec") or {}).get("containers")) or []
    return any(c.get("image") for c in containers if isinstance(c, dict))
