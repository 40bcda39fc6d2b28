"""HTTP: routing, bearer-token auth, JSON responses, chunked streams (watch, ``follow`` logs)
and the WebSocket upgrade for port-forward."""

from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from k8s_websocket import WebSocket, accept_key

from . import portforward, selectors
from .api import KINDS, kind_of
from .errors import ApiError, bad_request, method_not_allowed, no_route, unauthorized

if TYPE_CHECKING:
    from .server import FakeApiServer

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PUBLIC = (["version"], ["healthz"], ["livez"], ["readyz"])
MAX_BODY = 3 << 20
VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def truthy(value: str | None) -> bool:
    """Go's ``strconv.ParseBool`` truth values."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def discovery() -> Obj:
    """The ``/api/v1`` APIResourceList for the served resources."""
    resources: list[Obj] = []
    for name, kind in KINDS.items():
        entry = {"name": name, "singularName": kind.singular, "namespaced": kind.namespaced, "kind": kind.kind}
        resources.append(
            {**entry, "verbs": sorted(kind.verbs), **({"shortNames": list(kind.short)} if kind.short else {})}
        )
    resources += [
        {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
        {
            "name": "pods/portforward",
            "singularName": "",
            "namespaced": True,
            "kind": "PodPortForwardOptions",
            "verbs": ["create", "get"],
        },
    ]
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}


class Listener(ThreadingHTTPServer):
    """One listening socket (plain or TLS) of the fake API server."""

    daemon_threads = True

    def __init__(self, cluster: FakeApiServer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.cluster, self.ssl_context = cluster, ssl_context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; TLS handshakes happen later, in the connection's own thread."""
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def track(self, conn: socket.socket, add: bool) -> None:
        """Remember open connections so ``close_all`` can end them."""
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def close_all(self) -> None:
        """Shut down every open connection (ends keep-alive waits, watches, port-forwards)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection-level errors (resets, failed TLS handshakes) are routine here."""
        log.debug("connection from %s failed", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection; requests are dispatched to the cluster's API, kubelet and store."""

    protocol_version = "HTTP/1.1"
    server: Listener

    def setup(self) -> None:
        """Track the connection."""
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        """Untrack the connection."""
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Route the access log to ``logging`` at debug level."""
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        """GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """PUT (not served: 405)."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """PATCH."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """DELETE."""
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query_all = parse_qs(url.query, keep_blank_values=True)
        query = {k: v[-1] for k, v in self.query_all.items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
            body = self.rfile.read(length) if length else b""
            token = self.server.cluster.token
            if parts not in PUBLIC and token:
                scheme, _, value = self.headers.get("Authorization", "").partition(" ")
                if scheme.lower() != "bearer" or value.strip() != token:
                    raise unauthorized()
            self._route(method, parts, query, body)
        except ApiError as exc:
            self._json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as exc:
            log.exception("fake-apiserver: internal error on %s %s", method, self.path)
            self.server.cluster.report_error(f"{method} {self.path}: {exc!r}")
            self._json(500, ApiError(500, "InternalError", f"Internal error occurred: {exc!r}").status())

    def _json(self, code: int, obj: Any) -> None:
        self._raw(code, json.dumps(obj).encode(), "application/json")

    def _raw(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _client_gone(self) -> bool:
        """During a stream the client sends nothing, so readability means EOF or reset."""
        return bool(select.select([self.connection], [], [], 0)[0])

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None

    def _delete_opts(self, body: bytes, query: dict[str, str]) -> Obj:
        opts = self._parse(body) if body.strip() else {}
        if not isinstance(opts, dict):
            raise bad_request("DeleteOptions must be an object")
        if "gracePeriodSeconds" in query:
            opts["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        for key in ("propagationPolicy", "dryRun"):
            if key in query:
                opts[key] = query[key]
        if opts.get("orphanDependents") or truthy(query.get("orphanDependents")):
            opts.setdefault("propagationPolicy", "Orphan")
        return opts

    # -- routes --------------------------------------------------------------------------------------
    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        cluster = self.server.cluster
        if parts in PUBLIC:
            return self._json(200, VERSION) if parts == ["version"] else self._raw(200, b"ok", "text/plain")
        if parts == ["api"]:
            address = f"127.0.0.1:{self.server.port}"
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]
            return self._json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs})
        if parts == ["apis"]:
            return self._json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if parts[:2] != ["api", "v1"]:
            raise no_route()
        rest = parts[2:]
        if not rest:
            return self._json(200, discovery())
        namespace: str | None = None
        name = sub = None
        if len(rest) == 1:
            resource = rest[0]
        elif rest[0] == "namespaces" and len(rest) == 2:
            resource, name = "namespaces", rest[1]
        elif rest[0] == "namespaces" and len(rest) <= 5:
            namespace, resource = rest[1], rest[2]
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
        else:
            raise no_route()
        if resource not in KINDS or (namespace is not None and not KINDS[resource].namespaced):
            raise no_route()
        if KINDS[resource].namespaced and namespace is None and method != "GET":
            raise method_not_allowed()
        ns = namespace or ""
        if sub is not None:
            if resource != "pods" or name is None or sub not in ("log", "portforward", "status"):
                raise no_route()
            if sub == "status" and method == "GET":
                return self._json(200, cluster.api.get(resource, ns, name))
            if sub == "log" and method == "GET":
                return self._log(ns, name, query)
            if sub == "portforward" and method in ("GET", "POST"):
                return self._portforward(ns, name)
            raise method_not_allowed()
        if name is None:
            if method == "GET" and truthy(query.get("watch")):
                return self._watch(resource, namespace, query)
            if method == "GET":
                return self._json(200, cluster.api.list(resource, namespace, query))
            if method == "POST":
                return self._json(201, cluster.api.create(resource, ns, self._parse(body), query))
            if method == "DELETE":
                opts = self._delete_opts(body, query)
                return self._json(200, cluster.api.delete_collection(resource, ns, query, opts))
            raise method_not_allowed()
        if method == "GET":
            return self._json(200, cluster.api.get(resource, ns, name))
        if method == "PATCH":
            content_type = self.headers.get("Content-Type", "")
            return self._json(200, cluster.api.patch(resource, ns, name, self._parse(body), content_type, query))
        if method == "DELETE":
            return self._json(200, cluster.api.delete(resource, ns, name, self._delete_opts(body, query)))
        raise method_not_allowed()

    def _watch(self, resource: str, namespace: str | None, query: dict[str, str]) -> None:
        """A watch stream: newline-delimited ``{"type", "object"}`` events in HTTP chunks."""
        kind_of(resource, "watch")
        store, match = self.server.cluster.store, selectors.parse_both(resource, query)
        rv = query.get("resourceVersion", "")
        if rv not in ("", "0") and not rv.isdigit():
            raise ApiError(400, "BadRequest", f"resourceVersion: Invalid value: {rv!r}: must be an integer")
        limits = [float(query["timeoutSeconds"])] if query.get("timeoutSeconds") else []
        if self.server.cluster.max_watch_seconds:
            limits.append(self.server.cluster.max_watch_seconds)
        deadline = time.monotonic() + min(limits) if limits else None
        self._start_stream("application/json")

        def send(type_: str, obj: Obj) -> None:
            self._chunk(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        if rv in ("", "0"):
            objects, after = store.snapshot(resource, namespace)
            for obj in objects:
                if match(obj):
                    send("ADDED", obj)
        else:
            after = int(rv)
        while True:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0 or self._client_gone():
                break
            try:
                changes = store.changes(after, wait)
            except ApiError as exc:
                send("ERROR", exc.status())
                break
            if changes is None:
                break
            for ch in changes:
                after = ch.rv
                if ch.resource != resource or namespace not in (None, ch.namespace):
                    continue
                now_in, was_in = match(ch.obj), ch.prev is not None and match(ch.prev)
                if ch.type == "DELETED":
                    type_ = "DELETED" if was_in else ""
                elif now_in:
                    type_ = ch.type if (ch.type == "ADDED" or was_in) else "ADDED"
                else:
                    type_ = "DELETED" if was_in else ""
                if type_:
                    send(type_, ch.obj)
        self._end_stream()

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        """``pods/log`` with ``container``, ``previous``, ``tailLines``, ``limitBytes`` and ``follow``."""
        kubelet = self.server.cluster.kubelet
        assert kubelet is not None
        path, container = kubelet.log_file(namespace, name, query.get("container"), truthy(query.get("previous")))
        data = path.read_bytes()
        shown = data
        if query.get("tailLines"):
            n = int(query["tailLines"])
            shown = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
        if query.get("limitBytes"):
            shown = shown[: int(query["limitBytes"])]
        if not truthy(query.get("follow")):
            return self._raw(200, shown, "text/plain")
        self._start_stream("text/plain")
        if shown:
            self._chunk(shown)
        with open(path, "rb") as f:
            f.seek(len(data))
            while not self.server.cluster.store.closed:
                more = f.read(65536)
                if more:
                    self._chunk(more)
                    continue
                if not (container.alive and container.log == path):
                    if rest := f.read():
                        self._chunk(rest)
                    break
                if self._client_gone():
                    return
                time.sleep(0.05)
        self._end_stream()

    def _portforward(self, namespace: str, name: str) -> None:
        """Upgrade to WebSocket and relay ports (see ``portforward``)."""
        if self.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request("fake-apiserver serves pods/portforward over WebSocket only (SPDY is not implemented)")
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        if portforward.PROTOCOL not in offered:
            raise bad_request(f"requested protocol(s) are not supported: {offered}; supports [{portforward.PROTOCOL}]")
        try:
            ports = portforward.parse_ports(self.query_all.get("ports", []))
        except ValueError:
            raise bad_request('query parameter "port" is required and must be 1..65535') from None
        kubelet = self.server.cluster.kubelet
        assert kubelet is not None
        uid, pids = kubelet.pod_pids(namespace, name)
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(self.headers.get("Sec-WebSocket-Key", "")))
        self.send_header("Sec-WebSocket-Protocol", portforward.PROTOCOL)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        portforward.serve(WebSocket(self.connection, self.rfile), uid, pids, ports)
