"""``FakeApiServer``: the store, API, scheduler, kubelet and garbage collector behind two
listeners (http and https) on 127.0.0.1, plus client configuration and test knobs."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .api import Api
from .errors import ApiError
from .events import Recorder
from .garbage import GarbageCollector
from .handler import Listener
from .kubelet import Kubelet, KubeletSettings
from .scheduler import Node, Scheduler
from .store import Store
from .tls import write_certificates

if TYPE_CHECKING:
    from kubernetes.client import Configuration

log = logging.getLogger(__name__)
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class InClusterFiles:
    """What a pod's service account mount and environment would give ``load_incluster_config``."""

    directory: Path
    token_file: Path
    ca_file: Path
    namespace_file: Path
    env: dict[str, str]


class FakeApiServer:
    """A strict, in-process stand-in for a one-node Kubernetes cluster (core/v1 Pod subset).

    ``start()`` serves http on ``url`` and https on ``https_url``; ``stop()`` ends every
    connection and kills every process the fake kubelet started.

    Knobs: ``node`` (its labels and allocatable resources, what the scheduler checks);
    ``pod_cidr`` (loopback CIDR for pod IPs, a random 127.x.y.0/24 by default); ``extra_env``
    (added to every container's base environment); ``inject_pod_ip`` (set ``POD_IP`` in every
    container; real pods only get it through a ``fieldRef``); ``token`` (the bearer token,
    random by default, ``""`` turns auth off); ``max_watch_seconds`` (end every watch after
    that long, as real servers do after a few minutes).
    """

    def __init__(
        self,
        *,
        node: Node | None = None,
        pod_cidr: str = "",
        extra_env: dict[str, str] | None = None,
        inject_pod_ip: bool = True,
        token: str | None = None,
        max_watch_seconds: float | None = None,
    ) -> None:
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.max_watch_seconds = max_watch_seconds  # real servers end watches after minutes; clients must resume
        self.node = node or Node()
        self.store = Store()
        self.api = Api(self.store)
        self.recorder = Recorder(self.store, self.node.name)
        self.root = Path(tempfile.mkdtemp(prefix="fake-apiserver-"))
        self.settings = KubeletSettings(
            root=self.root / "pods", pod_cidr=pod_cidr, extra_env=dict(extra_env or {}), inject_pod_ip=inject_pod_ip
        )
        self.internal_errors: list[str] = []
        self.kubelet: Kubelet | None = None
        self._listeners: list[Listener] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> FakeApiServer:
        """Bind both listeners, create the built-in namespaces, start the controllers."""
        self.ca_file, cert, key = write_certificates(self.root / "pki")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._http, self._https = Listener(self), Listener(self, context)
        self._listeners = [self._http, self._https]
        port = str(self._https.port)
        self.settings.service_env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
        }
        self.kubelet = Kubelet(self.store, self.api, self.recorder, self.node, self.settings)
        self.scheduler = Scheduler(self.store, self.recorder, self.node)
        self.gc = GarbageCollector(self.store, self.api)
        for ns in BUILTIN_NAMESPACES:
            self.api.create("namespaces", "", {"metadata": {"name": ns}})
        self._spawn(self._run_controllers, "fake-apiserver-controllers")
        for listener in self._listeners:
            self._spawn(lambda listener=listener: listener.serve_forever(poll_interval=0.05), "fake-apiserver-listener")
        return self

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run_controllers(self) -> None:
        """Feed every change, in order, to the scheduler, the kubelet and the garbage collector."""
        assert self.kubelet is not None
        handlers = (self.scheduler.on_change, self.kubelet.on_change, self.gc.on_change)
        after = 0
        while (changes := self.store.changes(after, 0.5, internal=True)) is not None:
            for ch in changes:
                after = ch.rv
                for handler in handlers:
                    try:
                        handler(ch)
                    except ApiError as exc:
                        if exc.code != 404:
                            self.report_error(f"{handler.__qualname__}: {exc.message}")
                    except Exception as exc:  # a bug in the fake must fail the test, not vanish
                        log.exception("fake-apiserver controller failed")
                        self.report_error(f"{handler.__qualname__}: {exc!r}")

    def report_error(self, message: str) -> None:
        """Record a bug in the fake itself (the fixture fails the test on any)."""
        self.internal_errors.append(message)

    def stop(self) -> None:
        """Stop serving, end watches and streams, kill every started process, remove temp files."""
        for listener in self._listeners:
            listener.shutdown()
        self.store.close()
        if self.kubelet is not None:
            self.kubelet.stop()
        for listener in self._listeners:
            listener.close_all()
            listener.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- client configuration ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Plain-http base URL."""
        return f"http://127.0.0.1:{self._http.port}"

    @property
    def https_url(self) -> str:
        """https base URL (certificate in ``ca_file``, valid for 127.0.0.1 and localhost)."""
        return f"https://127.0.0.1:{self._https.port}"

    def configuration(self, https: bool = False) -> Configuration:
        """A ``kubernetes.client.Configuration`` for this server (bearer token included)."""
        from kubernetes.client import Configuration

        config = Configuration(host=self.https_url if https else self.url)
        config.api_key = {"authorization": f"Bearer {self.token}"}
        if https:
            config.ssl_ca_cert = str(self.ca_file)
        return config

    def write_kubeconfig(self, path: Path, *, https: bool = False, namespace: str = "default") -> Path:
        """Write a kubeconfig (JSON is YAML) usable with ``load_kube_config(config_file=path)``."""
        cluster: dict[str, str] = {"server": self.https_url if https else self.url}
        if https:
            cluster["certificate-authority"] = str(self.ca_file)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def write_incluster_files(self, directory: Path, namespace: str = "default") -> InClusterFiles:
        """Service-account files (token, ca.crt, namespace) plus the env a pod would have.

        ``load_incluster_config()`` reads fixed paths and always uses https; point
        ``kubernetes.config.incluster_config.SERVICE_TOKEN_FILENAME``/``SERVICE_CERT_FILENAME``
        at these files and set ``env`` (the ``k8s_incluster`` fixture does both).
        """
        directory.mkdir(parents=True, exist_ok=True)
        token, ca, ns = directory / "token", directory / "ca.crt", directory / "namespace"
        token.write_text(self.token)
        shutil.copyfile(self.ca_file, ca)
        ns.write_text(namespace)
        env = {
            k: v
            for k, v in self.settings.service_env.items()
            if k in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
        }
        return InClusterFiles(directory, token, ca, ns, env)

    # -- test knobs ----------------------------------------------------------------------------------
    @property
    def unpullable_images(self) -> set[str]:
        """Images whose pull fails (the pod stays Pending in ImagePullBackOff)."""
        return self.settings.unpullable_images

    def evict(self, namespace: str, name: str, message: str = "") -> None:
        """Evict a running pod as node-pressure eviction would."""
        assert self.kubelet is not None
        self.kubelet.evict(
            namespace,
            name,
            message or "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. ",
        )

    def compact(self) -> None:
        """Make watches from any resourceVersion older than now fail with 410 Gone."""
        self.store.compact()

    def leftover_pids(self) -> list[int]:
        """Processes started by the fake kubelet that are still alive (should be none after ``stop``)."""
        return self.kubelet.leftover_pids() if self.kubelet else []

    @property
    def started_pids(self) -> list[int]:
        """Every pid the fake kubelet started."""
        return [pid for pid, _ in self.kubelet.started] if self.kubelet else []
