"""An optional metrics endpoint on the driver, in Prometheus' text format.

``serve_metrics()`` starts an HTTP server (off until called; loopback unless told
otherwise) whose ``GET /metrics`` gathers ``status()`` from every process and answers
with counts only: cluster size by manager, calls started/finished/failed and in flight,
the oldest call's age, bytes, memory and CPU per pid, and how long workers took to
join, by manager. No function names, arguments, host names or tracebacks: nothing a
scraper could not be shown, so it needs no cookie (``docs/observability.md``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .clusterstatus import WorkerStatus, status
from .engine import cluster
from .engine.hooks import manager_name

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_ENV = "CLUSTERCORE_METRICS"  # PORT, HOST:PORT or [IPV6]:PORT: `clustercore -p N` serves the metrics there
# Upper bounds of the launch histogram's buckets, seconds: a local worker joins in well
# under a second, an SSH one in a few, a Slurm job or a Kubernetes pod may queue for minutes.
LAUNCH_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Histogram:
    """Counts of observations at or below each bound of ``LAUNCH_BUCKETS`` (cumulative, as
    Prometheus has them), their sum and their number."""

    def __init__(self) -> None:
        self.buckets = [0] * len(LAUNCH_BUCKETS)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(LAUNCH_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1
        self.sum += value
        self.count += 1


_worker_launches: dict[str, _Histogram] = {}  # by manager: each worker's launch to its join
_addprocs: dict[str, list[float]] = {}  # by manager: [addprocs calls, their seconds in all]
_last_launch = [0.0]  # the start of the newest launch counted in _addprocs (its workers share it)
_seeded: set[int] = set()  # workers counted as the metrics began, before their addprocs announced them
_left = [0]
_begun = [False]
_lock = threading.Lock()


def _worker_joined(pid: int) -> None:
    """A worker joined (told when its ``addprocs`` has added them all): its own launch time,
    and the first of its launch's workers counts the whole ``addprocs`` call."""
    w = cluster.PGRP.workers.get(pid)
    if w is None or not w.joined:
        return  # gone already, or it did not join through addprocs
    now, manager = time.monotonic(), manager_name(w.manager) or "unknown"
    with _lock:
        if pid in _seeded:
            _seeded.discard(pid)
        else:
            _worker_launches.setdefault(manager, _Histogram()).observe(w.joined - w.launched)
        if w.launched != _last_launch[0]:
            _last_launch[0] = w.launched
            counts = _addprocs.setdefault(manager, [0, 0.0])
            counts[0] += 1
            counts[1] += now - w.launched


def _worker_left(pid: int) -> None:
    with _lock:
        _left[0] += 1
        _seeded.discard(pid)  # most were announced before the metrics began, and never will be again


def _begin() -> None:
    """Count from now on (once; the first ``serve_metrics`` or ``metrics_text`` calls it;
    importing this module changes nothing). The launch times of the workers already there
    count too; workers that left before, and earlier ``addprocs`` calls, do not.

    The listeners are registered in the same critical section as the workers there are
    seeded, and first, so no worker falls between the two: a worker announced before the
    registration had joined (``w.joined``) before it, so it is seeded; one announced after
    is told to ``_worker_joined``, which waits for ``_lock`` until the seeding is over and
    does not count again a worker in ``_seeded``. The engine's lock is taken first, as a
    listener told under it takes ``_lock`` after it."""
    if _begun[0]:
        return  # every scrape comes here: no lock once begun
    with cluster.PGRP.lock, _lock:
        if _begun[0]:
            return
        _begun[0] = True
        cluster.on_worker_joined(_worker_joined)
        cluster.on_worker_left(_worker_left)
        for w in cluster.PGRP.workers.values():
            if w.joined and w.state is not cluster.WorkerState.TERMINATED:
                _worker_launches.setdefault(manager_name(w.manager) or "unknown", _Histogram()).observe(
                    w.joined - w.launched
                )
                _seeded.add(w.id)  # its announcement, if it is still to come, counts it no more


def metrics_text(timeout: float = 2.0) -> str:
    """The metrics, as a scrape of the endpoint would get them."""
    _begin()
    rows = status(timeout)
    workers = [r for r in rows if r.pid != 1]
    by_manager: dict[str, int] = {}
    for row in workers:
        by_manager[row.manager] = by_manager.get(row.manager, 0) + 1
    with _lock:
        launches = {m: (list(h.buckets), h.sum, h.count) for m, h in _worker_launches.items()}
        calls = {m: list(v) for m, v in _addprocs.items()}
        left = _left[0]
    out: list[str] = []
    _metric(
        out,
        "workers",
        "gauge",
        "Workers in the cluster, by manager.",
        [("", {"manager": m}, n) for m, n in sorted(by_manager.items())],
    )
    _metric(
        out,
        "workers_unresponsive",
        "gauge",
        "Workers that did not answer the scrape in time.",
        [("", {}, sum(r.state == "unresponsive" for r in workers))],
    )
    _metric(
        out,
        "workers_left_total",
        "counter",
        "Workers that left the cluster (removed or died) since metrics began.",
        [("", {}, left)],
    )
    _metric(
        out,
        "worker_launch_seconds",
        "histogram",
        "Seconds from the start of a worker's launch (the addprocs call that started it) until it joined, by manager.",
        [
            sample
            for m, (buckets, total, count) in sorted(launches.items())
            for sample in (
                *(
                    ("_bucket", {"manager": m, "le": _number(b)}, n)
                    for b, n in zip(LAUNCH_BUCKETS, buckets, strict=True)
                ),
                ("_bucket", {"manager": m, "le": "+Inf"}, count),
                ("_sum", {"manager": m}, total),
                ("_count", {"manager": m}, count),
            )
        ],
    )
    _metric(
        out,
        "addprocs_seconds",
        "summary",
        "Seconds each addprocs call took, launch to return (its workers joined and introduced), by manager.",
        [
            (suffix, {"manager": m}, value)
            for m, (count, total) in sorted(calls.items())
            for suffix, value in (("_sum", total), ("_count", count))
        ],
    )
    per_pid = [
        ("up", "gauge", "1 if the process answered the scrape in time.", lambda r: r.state != "unresponsive"),
        ("calls_started_total", "counter", "User calls started.", lambda r: r.calls_started),
        ("calls_finished_total", "counter", "User calls that returned.", lambda r: r.calls_finished),
        ("calls_failed_total", "counter", "User calls that raised.", lambda r: r.calls_failed),
        ("calls_in_flight", "gauge", "User calls running now.", lambda r: len(r.calls_in_flight)),
        ("oldest_call_age_seconds", "gauge", "Age of the oldest call in flight (0: none).", _oldest_age),
        ("received_bytes_total", "counter", "Bytes of the frames the process received.", lambda r: r.bytes_in),
        ("sent_bytes_total", "counter", "Bytes of the frames others received from it.", lambda r: r.bytes_out),
        ("resident_memory_bytes", "gauge", "Resident memory.", lambda r: r.rss),
        ("cpu_seconds_total", "counter", "User and system CPU time.", lambda r: r.cpu_seconds),
    ]  # fmt: skip
    for name, kind, help, value in per_pid:
        _metric(out, name, kind, help, [("", {"pid": r.pid}, value(r)) for r in rows])
    return "\n".join(out) + "\n"


def _metric(out: list[str], name: str, kind: str, help: str, samples: list[tuple[str, dict[str, Any], float]]) -> None:
    """One metric family: its HELP and TYPE lines, and a line per ``(suffix, labels, value)``."""
    out.append(f"# HELP clustercore_{name} {help}")
    out.append(f"# TYPE clustercore_{name} {kind}")
    for suffix, labels, value in samples:
        text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        out.append(
            f"clustercore_{name}{suffix}{{{text}}} {_number(value)}"
            if text
            else f"clustercore_{name}{suffix} {_number(value)}"
        )


def _oldest_age(row: WorkerStatus) -> float:
    return row.oldest_call.age if row.oldest_call else 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))


SCRAPERS_AT_ONCE = 4  # connections served at once; more are closed at once
CLIENT_SECONDS = 5.0  # a scraper that sends nothing for this long is dropped


class _BoundedServer(ThreadingHTTPServer):
    """An HTTP server that holds a thread for at most ``SCRAPERS_AT_ONCE`` connections: a
    process that opens connections and never finishes a request (anyone on the host may
    connect to a loopback port) costs the driver no more than that."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = _family(address[0])
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(SCRAPERS_AT_ONCE)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """The running endpoint: ``url``, ``address``; :meth:`close` stops it."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._timeout = timeout
        self._looking = threading.Lock()
        body_now = self._body

        class Handler(BaseHTTPRequestHandler):
            timeout = CLIENT_SECONDS

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "the metrics are at /metrics")
                    return
                try:
                    body = body_now()
                except Exception as exc:  # noqa: BLE001 - a scrape that fails says why
                    self.send_error(500, f"gathering the metrics failed: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every few seconds is not news

        self._server = _BoundedServer((host, port), Handler)
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        shown = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        self.url = f"http://{shown}:{self.address[1]}/metrics"
        self.started = time.time()
        threading.Thread(target=self._server.serve_forever, name="clustercore-metrics", daemon=True).start()

    def _body(self) -> bytes:
        """The metrics now; one scrape at a time looks (each look asks every worker)."""
        with self._looking:
            return metrics_text(self._timeout).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(port: int = 9464, host: str = "127.0.0.1", timeout: float = 2.0) -> MetricsServer:
    """Serve the metrics at ``http://host:port/metrics`` (port 0: any free port) on a thread;
    loopback unless ``host`` says otherwise. Each scrape gives every worker ``timeout``
    seconds to answer. Pid 1 only."""
    if cluster.PGRP.myid != 1:
        raise RuntimeError(f"the metrics endpoint runs on the driver (pid 1); this is pid {cluster.PGRP.myid}")
    _begin()
    return MetricsServer(host, port, timeout)


def _family(host: str) -> socket.AddressFamily:
    """The address family to listen with on ``host``: IPv6 for an IPv6 literal (or a name
    that resolves only to one), else IPv4."""
    if ":" in host:
        return socket.AF_INET6
    try:
        found = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return socket.AF_INET  # binding will say what is wrong with the name
    families = {info[0] for info in found}
    return socket.AF_INET6 if families == {socket.AF_INET6} else socket.AF_INET


_PORT = re.compile(r"[0-9]{1,5}")
_HOST = re.compile(r"[A-Za-z0-9_.-]+")


def metrics_address(value: str) -> tuple[str, int]:
    """``CLUSTERCORE_METRICS``'s ``(host, port)``: ``PORT`` (on 127.0.0.1), ``HOST:PORT``
    or ``[IPV6]:PORT`` (``[::1]:9464``). Anything else is a ``ValueError`` naming the variable."""
    text = value.strip()

    def bad(why: str) -> ValueError:
        return ValueError(f"{METRICS_ENV}={value!r} is not PORT, HOST:PORT or [IPV6]:PORT ({why})")

    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise bad("no ']' closes the IPv6 address")
        if not rest.startswith(":"):
            raise bad("a port follows the ']', as in [::1]:9464")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
        port = rest[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
        if ":" in host:
            raise bad("an IPv6 address goes in brackets, as in [::1]:9464")
        if not _HOST.fullmatch(host):
            raise bad(f"{host!r} is not a host name or address")
    else:
        host, port = "127.0.0.1", text
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise bad(f"the port must be a number from 1 to 65535, not {port!r}")
    return host, int(port)
