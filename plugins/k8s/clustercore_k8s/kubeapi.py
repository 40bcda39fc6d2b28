"""The plugin's only door to the API server: a thin, dict-based wrapper over ``CoreV1Api``.

Objects go in and come out as plain dicts (camelCase, as in YAML), read
from the raw response, so the plugin does not depend on the client's model
classes knowing every field a newer server sends. Refusals become
:class:`~clustercore_k8s.errors.K8sError` with the server's own message.

Configuration is found like kubectl: an explicit kubeconfig, ``KUBECONFIG``,
``~/.kube/config``, and otherwise the pod's service account.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import placement
from .errors import K8sError

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Gone(Exception):
    """A watch's resourceVersion is too old (410): list again."""


@dataclass
class Connection:
    """A client configuration, the namespace it defaults to, and whether it is the pod's service account."""

    configuration: Any
    namespace: str
    in_cluster: bool


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """Find the cluster as kubectl does; ``K8sError`` if there is no configuration."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or ""
    default = os.path.expanduser("~/.kube/config")
    if path or context or os.path.exists(default):
        path = path or default
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            contexts, active = config.list_kube_config_contexts(config_file=path)
        except (ConfigException, OSError, ValueError) as exc:
            raise K8sError(f"cannot use the kubeconfig {path}: {exc}") from exc
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
        return Connection(cfg, namespace, in_cluster=False)
    if placement.in_pod():
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise K8sError(f"cannot use the pod's service account: {exc}") from exc
        return Connection(cfg, placement.pod_namespace() or "default", in_cluster=True)
    raise K8sError(
        "no Kubernetes configuration: give a kubeconfig, set KUBECONFIG, create ~/.kube/config, "
        "or run the driver in a pod with a service account"
    )


def _status_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body)
        return str(body.get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", "") or exc)


class KubeApi:
    """Pods, Secrets, Events, logs and port-forward in one namespace."""

    def __init__(self, connection: Connection, namespace: str | None = None, pool_size: int = 0) -> None:
        from kubernetes import client

        self.connection = connection
        self.namespace = namespace or connection.namespace
        if pool_size:  # one pooled connection per followed log, plus the watch and short calls
            connection.configuration.connection_pool_maxsize = max(
                connection.configuration.connection_pool_maxsize or 0, pool_size
            )
        self.client = client.ApiClient(connection.configuration)
        self.core = client.CoreV1Api(self.client)
        # kubernetes.stream swaps ``call_api`` on the ApiClient it is given while it runs, so
        # port-forwards get a client of their own (any other call on it would go astray) and a lock.
        self._forward_client = client.ApiClient(connection.configuration)
        self._forward_core = client.CoreV1Api(self._forward_client)
        self._forward_lock = threading.Lock()
        self._streams: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return str(self.connection.configuration.host)

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Obj:
        """Call ``CoreV1Api.<method>``; the response body as a dict, or ``K8sError``."""
        found = self._request(what, method, *args, **kwargs)
        assert found is not None
        return found

    def _request(self, what: str, method: str, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Obj | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = getattr(self.core, method)(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise K8sError(f"{what}: {exc.status} {exc.reason}: {_status_message(exc)}") from None
        except HTTPError as exc:
            raise K8sError(f"{what}: cannot reach the API server at {self.host}: {exc}") from None
        try:
            found: Obj = json.loads(resp.data) if resp.data else {}
        finally:
            resp.release_conn()
        return found

    # --- pods -------------------------------------------------------------------------------

    def create_pod(self, body: Obj) -> Obj:
        return self._call(
            f"creating a pod in namespace {self.namespace}", "create_namespaced_pod", self.namespace, body
        )

    def read_pod(self, name: str, namespace: str | None = None) -> Obj | None:
        ns = namespace or self.namespace
        return self._request(f"reading pod {ns}/{name}", "read_namespaced_pod", name, ns, missing_ok=True)

    def label_pod(self, name: str, labels: dict[str, str]) -> None:
        self._request(
            f"labelling pod {self.namespace}/{name}",
            "patch_namespaced_pod",
            name,
            self.namespace,
            {"metadata": {"labels": labels}},
            missing_ok=True,
        )

    def delete_pod(self, name: str, grace_seconds: int | None = None, namespace: str | None = None) -> bool:
        """Delete a pod; ``False`` if it was already gone."""
        ns = namespace or self.namespace
        kwargs = {} if grace_seconds is None else {"grace_period_seconds": grace_seconds}
        done = self._request(f"deleting pod {ns}/{name}", "delete_namespaced_pod", name, ns, missing_ok=True, **kwargs)
        return done is not None

    def list_pods(self, selector: str, namespace: str | None = None) -> tuple[list[Obj], str]:
        """Pods matching a label selector (``namespace="*"``: every namespace) and the list's resourceVersion."""
        ns = namespace or self.namespace
        if ns == "*":
            found = self._call("listing pods", "list_pod_for_all_namespaces", label_selector=selector)
        else:
            found = self._call(f"listing pods in {ns}", "list_namespaced_pod", ns, label_selector=selector)
        return found.get("items") or [], found["metadata"].get("resourceVersion", "")

    def watch_pods(self, selector: str, resource_version: str, timeout: int) -> Iterator[tuple[str, Obj]]:
        """``(type, pod)`` events after ``resource_version``; ends after ``timeout`` s or on :meth:`close`.

        Raises :class:`Gone` when the version is too old. BOOKMARKs come through
        as ``("BOOKMARK", {"metadata": {"resourceVersion": ...}})``.
        """
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        try:
            resp = self.core.list_namespaced_pod(
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                timeout_seconds=timeout,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(30, timeout + 30),  # a silently dead connection ends too
            )
        except ApiException as exc:
            if exc.status == 410:
                raise Gone from None
            raise K8sError(f"watching pods in {self.namespace}: {exc.status} {_status_message(exc)}") from None
        with self._open_stream(resp):
            for line in iter_resp_lines(resp):
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise Gone
                    raise K8sError(f"watching pods in {self.namespace}: {status.get('message', status)}")
                yield event["type"], event["object"]

    def pod_events(self, name: str, uid: str) -> list[Obj]:
        """The Events about one pod, oldest first."""
        selector = f"involvedObject.kind=Pod,involvedObject.name={name},involvedObject.uid={uid}"
        found = self._call(
            f"listing events of pod {name}", "list_namespaced_event", self.namespace, field_selector=selector
        )
        items = found.get("items") or []
        return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def follow_log(self, name: str) -> Any:
        """The pod's log from its start, followed: a raw response (``read1``/``close``)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.core.read_namespaced_pod_log(name, self.namespace, follow=True, _preload_content=False)
        except ApiException as exc:
            raise K8sError(f"reading the log of pod {name}: {exc.status} {_status_message(exc)}") from None
        with self._lock:
            self._streams.add(resp)
        return resp

    def log_tail(self, name: str, lines: int = 5) -> list[str]:
        """The last lines of a pod's log (none if it cannot be read)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp: Any = self.core.read_namespaced_pod_log(
                name, self.namespace, tail_lines=lines, _preload_content=False
            )
        except (ApiException, HTTPError):
            return []
        data: bytes = resp.data
        resp.release_conn()
        return [line for line in data.decode(errors="replace").splitlines() if line.strip()]

    def forget_stream(self, resp: Any) -> None:
        with self._lock:
            self._streams.discard(resp)

    def port_forward(self, name: str, port: int) -> Any:
        """A port-forward session to ``localhost:port`` in the pod (``kubernetes.stream.portforward``)."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import portforward

        try:
            with self._forward_lock:
                connect = self._forward_core.connect_get_namespaced_pod_portforward
                return portforward(connect, name, self.namespace, ports=str(port))
        except ApiException as exc:
            raise ConnectionError(f"cannot port-forward to pod {name}:{port}: {exc.reason}") from None

    # --- secrets ----------------------------------------------------------------------------

    def create_secret(self, body: Obj) -> Obj:
        what = f"creating the cookie Secret in namespace {self.namespace}"
        return self._call(what, "create_namespaced_secret", self.namespace, body)

    def delete_secret(self, name: str, namespace: str | None = None) -> bool:
        ns = namespace or self.namespace
        return (
            self._request(f"deleting Secret {ns}/{name}", "delete_namespaced_secret", name, ns, missing_ok=True)
            is not None
        )

    def list_secrets(self, selector: str, namespace: str | None = None) -> list[Obj]:
        ns = namespace or self.namespace
        if ns == "*":
            found = self._call("listing secrets", "list_secret_for_all_namespaces", label_selector=selector)
        else:
            found = self._call(f"listing secrets in {ns}", "list_namespaced_secret", ns, label_selector=selector)
        return found.get("items") or []

    # --- streams ------------------------------------------------------------------------------

    def _open_stream(self, resp: Any) -> _Stream:
        return _Stream(self, resp)

    def close(self) -> None:
        """End every open watch and log stream, then the connection pool."""
        with self._lock:
            streams, self._streams = list(self._streams), set()
        for resp in streams:
            shutdown(resp)
        for api_client in (self.client, self._forward_client):
            try:
                pools = api_client.rest_client.pool_manager.pools
                for key in list(pools.keys()):  # urllib3 2 drops pools on clear() without closing their sockets
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
                api_client.close()
            except Exception:
                log.debug("closing the API client failed", exc_info=True)


class _Stream:
    """Keeps a streaming response known to its ``KubeApi`` (so ``close`` can end it) while in use."""

    def __init__(self, api: KubeApi, resp: Any) -> None:
        self.api, self.resp = api, resp

    def __enter__(self) -> Any:
        with self.api._lock:
            self.api._streams.add(self.resp)
        return self.resp

    def __exit__(self, *exc: object) -> None:
        self.api.forget_stream(self.resp)
        shutdown(self.resp)


def shutdown(resp: Any) -> None:
    """End a streaming response, waking a thread blocked reading it."""
    for method in ("shutdown", "close", "release_conn"):
        try:
            getattr(resp, method, lambda: None)()
        except Exception:  # noqa: BLE001 - the stream may already be broken
            pass
