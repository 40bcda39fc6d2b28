"""Helpers for tests that drive the fake through the real client: a pod builder, bounded
watch-driven waits (no sleep loops), and raw requests that bypass the client's models."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

if TYPE_CHECKING:
    from .server import FakeApiServer

Watch: Any = watch.Watch  # the client's watch module is untyped


def python_pod(name: str = "", script: str = "pass", *, generate: str = "", **container: Any) -> dict[str, Any]:
    """A ``restartPolicy: Never`` pod whose one container runs ``python -c script``.

    ``generate`` sets ``generateName`` instead of ``name``; ``container`` merges into the container.
    """
    spec = {"name": "main", "image": "python:3.11", "command": ["python", "-c", script], **container}
    meta = {"generateName": generate} if generate else {"name": name}
    return {"metadata": meta, "spec": {"restartPolicy": "Never", "containers": [spec]}}


def wait_pod(
    core: client.CoreV1Api, name: str, cond: Callable[[Any], bool], *, ns: str = "default", timeout: int = 20
) -> Any:
    """Watch one pod until ``cond(pod)`` holds; returns that ``V1Pod``."""
    w = Watch()
    selector = f"metadata.name={name}"
    for ev in w.stream(core.list_namespaced_pod, ns, field_selector=selector, timeout_seconds=timeout):
        if ev["type"] != "DELETED" and cond(ev["object"]):
            w.stop()
            return ev["object"]
    raise AssertionError(f"pod {ns}/{name} did not reach the expected state in {timeout}s")


def wait_phase(core: client.CoreV1Api, name: str, *phases: str, ns: str = "default", timeout: int = 20) -> Any:
    """Watch one pod until its phase is one of ``phases``."""
    return wait_pod(core, name, lambda p: p.status.phase in phases, ns=ns, timeout=timeout)


def wait_gone(
    core: client.CoreV1Api, name: str, resource: str = "pod", *, ns: str = "default", timeout: int = 20
) -> None:
    """Wait until an object (``pod``, ``secret``, ...) is deleted: a DELETED event, or already 404."""
    try:
        rv = getattr(core, f"read_namespaced_{resource}")(name, ns).metadata.resource_version
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    w = Watch()
    lister = getattr(core, f"list_namespaced_{resource}")
    selector = f"metadata.name={name}"
    for ev in w.stream(lister, ns, field_selector=selector, resource_version=rv, timeout_seconds=timeout):
        if ev["type"] == "DELETED":
            w.stop()
            return
    raise AssertionError(f"{resource} {ns}/{name} still exists after {timeout}s")


def wait_event(core: client.CoreV1Api, name: str, reason: str, *, ns: str = "default", timeout: int = 20) -> Any:
    """Watch the Events about object ``name`` until one has ``reason``; returns that event."""
    w = Watch()
    selector = f"involvedObject.name={name}"
    for ev in w.stream(core.list_namespaced_event, ns, field_selector=selector, timeout_seconds=timeout):
        if ev["object"].reason == reason:
            w.stop()
            return ev["object"]
    raise AssertionError(f"no {reason} event for {ns}/{name} in {timeout}s")


def log_lines(core: client.CoreV1Api, name: str, count: int, *, ns: str = "default", timeout: int = 20) -> list[str]:
    """The first ``count`` lines of a pod's log, following it as it is written."""
    wait_phase(core, name, "Running", "Succeeded", "Failed", ns=ns, timeout=timeout)
    resp: Any = core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False, _request_timeout=timeout)
    data = b""
    try:
        for chunk in resp.stream():
            data += chunk
            if data.count(b"\n") >= count:
                break
    finally:
        resp.close()
    return data.decode().splitlines()[:count]


def raw_request(
    server: FakeApiServer, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    """One plain-http request with no client-side model in the way: (status, parsed JSON or bytes).

    ``server`` may also be the real one of ``real_apiserver`` (https, client certificate)."""
    if not hasattr(server, "token"):
        return server.raw_request(method, path, body, ctype)  # type: ignore[no-any-return]
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    return exchange(conn, method, path, body, ctype, server.token)


def exchange(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any, ctype: str, token: str | None
) -> tuple[int, Any]:
    """One request on ``conn``, which it then closes: (status, parsed JSON or bytes)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    return resp.status, json.loads(payload) if payload.startswith(b"{") else payload
