"""The Prometheus endpoint, scraped over HTTP while real workers run."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

import clustercore as cc
from clustercore.engine import cluster
from clustercore.metrics import MetricsServer, metrics_address, metrics_text

LINE = re.compile(r'^clustercore_[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


@pytest.fixture
def endpoint() -> Iterator[MetricsServer]:
    server = cc.serve_metrics(port=0)
    try:
        yield server
    finally:
        server.close()


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) clustercore_[a-z_]+ ", line), line
            continue
        assert LINE.match(line), line
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def test_scrape_counts_workers_calls_and_launches(fresh: None, endpoint: MetricsServer) -> None:
    assert endpoint.address[0] == "127.0.0.1" and endpoint.url.endswith("/metrics")
    launches = 'clustercore_worker_launch_seconds_count{manager="local"}'
    before = scrape(endpoint.url).get(launches, 0)  # the workers of earlier tests count too
    pids = cc.addprocs(2)
    for _ in range(3):
        cc.remotecall_fetch(abs, pids[0], -1)
    with pytest.raises(cc.RemoteException):
        cc.remotecall_fetch(int, pids[0], "x")
    values = scrape(endpoint.url)
    assert values['clustercore_workers{manager="local"}'] == 2
    assert values["clustercore_workers_unresponsive"] == 0
    assert values[launches] - before == 2
    assert values['clustercore_worker_launch_seconds_sum{manager="local"}'] > 0
    for pid in (1, *pids):
        assert values[f'clustercore_up{{pid="{pid}"}}'] == 1
        assert values[f'clustercore_resident_memory_bytes{{pid="{pid}"}}'] > 1 << 20
    assert values[f'clustercore_calls_finished_total{{pid="{pids[0]}"}}'] >= 3
    assert values[f'clustercore_calls_failed_total{{pid="{pids[0]}"}}'] == 1
    assert values[f'clustercore_received_bytes_total{{pid="{pids[0]}"}}'] > 0
    assert values['clustercore_sent_bytes_total{pid="1"}'] > 0
    cc.rmprocs(pids[1])
    values = scrape(endpoint.url)
    assert values['clustercore_workers{manager="local"}'] == 1
    assert values["clustercore_workers_left_total"] >= 1


def test_only_metrics_are_served(endpoint: MetricsServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(endpoint.url.replace("/metrics", "/"), timeout=30)
    assert caught.value.code == 404
    assert 'clustercore_up{pid="1"} 1' in metrics_text()  # a driver alone has metrics too


def test_clustercore_p_serves_metrics_when_asked() -> None:
    with socket.socket() as probe:  # a free port (the driver binds it again right away)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import urllib.request\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=30).read().decode()\n"
        "print([l for l in text.splitlines() if l.startswith('clustercore_workers{')])\n"
    )
    env = {**os.environ, "CLUSTERCORE_METRICS": f"127.0.0.1:{port}", "CLUSTERCORE_ATTACH": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "clustercore", "-p", "2", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['clustercore_workers{manager=\"local\"} 2']"


def test_connections_that_never_finish_a_request_hold_few_threads(endpoint: MetricsServer) -> None:
    # Anyone on the host may connect to a loopback port: 40 connections that send half a
    # request hold at most SCRAPERS_AT_ONCE of the driver's threads, the rest are closed
    # at once, and once they go the endpoint answers again.
    from clustercore.metrics import SCRAPERS_AT_ONCE

    before = threading.active_count()
    idle = [socket.create_connection(endpoint.address, timeout=30) for _ in range(40)]
    try:
        for sock in idle:
            sock.sendall(b"GET /metr")
        one_more = socket.create_connection(endpoint.address, timeout=30)
        with one_more:
            one_more.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert one_more.recv(1) == b""  # closed: every place is taken
        assert threading.active_count() <= before + SCRAPERS_AT_ONCE
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30  # the held places free as their threads see the closes
    while True:
        try:
            assert "clustercore_workers" in " ".join(scrape(endpoint.url))
            break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("9464", ("127.0.0.1", 9464)),
        (" 9464 ", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("metrics.example:80", ("metrics.example", 80)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:65535", ("::", 65535)),
        ("[fe80::1%eth0]:9464", ("fe80::1%eth0", 9464)),
    ],
)
def test_the_metrics_variable_takes_a_port_host_and_port_or_ipv6(value: str, address: tuple[str, int]) -> None:
    assert metrics_address(value) == address


@pytest.mark.parametrize(
    "value",
    ["", "::1:9464", "[::1]", "[::1]9464", "[::1:9464", "[nothost]:9464", "host:", ":9464", "host:http",
     "host:0", "host:65536", "9464x", "a b:9464", "http://host:9464",
     "host:\uff19\uff14\uff16\uff14"],  # full-width digits: str.isdigit() would take them
)  # fmt: skip
def test_a_malformed_metrics_variable_is_a_value_error_naming_it(value: str) -> None:
    with pytest.raises(ValueError, match=r"CLUSTERCORE_METRICS=.* is not PORT, HOST:PORT or \[IPV6\]:PORT"):
        metrics_address(value)


def _ipv6_loopback_port() -> int:
    """A free port on ::1 (the driver binds it again right away); skip without IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            return int(probe.getsockname()[1])
    except OSError as exc:
        pytest.skip(f"this machine has no IPv6 loopback: {exc}")


def test_clustercore_p_serves_metrics_on_ipv6_loopback() -> None:
    port = _ipv6_loopback_port()
    code = (
        "import urllib.request\n"
        f"text = urllib.request.urlopen('http://[::1]:{port}/metrics', timeout=30).read().decode()\n"
        "print([l for l in text.splitlines() if l.startswith('clustercore_workers{')])\n"
    )
    env = {**os.environ, "CLUSTERCORE_METRICS": f"[::1]:{port}", "CLUSTERCORE_ATTACH": "0"}
    command = [sys.executable, "-m", "clustercore", "-p", "1", "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['clustercore_workers{manager=\"local\"} 1']"


def test_serve_metrics_on_ipv6_loopback() -> None:
    _ipv6_loopback_port()
    server = cc.serve_metrics(port=0, host="::1")
    try:
        assert server.url == f"http://[::1]:{server.address[1]}/metrics"
        assert scrape(server.url)['clustercore_up{pid="1"}'] == 1
    finally:
        server.close()


def test_clustercore_p_refuses_a_malformed_metrics_variable_before_any_worker_starts() -> None:
    env = {**os.environ, "CLUSTERCORE_METRICS": "::1:9464", "CLUSTERCORE_ATTACH": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "clustercore", "-p", "1", "-c", "print('ran')"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "CLUSTERCORE_METRICS='::1:9464' is not PORT, HOST:PORT or [IPV6]:PORT" in done.stderr


def _launch_figures(values: dict[str, float]) -> tuple[float, float, float, float]:
    """The local manager's worker launches (count, sum) and addprocs calls (count, sum)."""
    get = lambda name: values.get(f'clustercore_{name}{{manager="local"}}', 0.0)  # noqa: E731
    return (
        get("worker_launch_seconds_count"),
        get("worker_launch_seconds_sum"),
        get("addprocs_seconds_count"),
        get("addprocs_seconds_sum"),
    )


def test_each_worker_counts_its_own_launch_and_addprocs_its_whole_call(fresh: None, endpoint: MetricsServer) -> None:
    before = _launch_figures(scrape(endpoint.url))
    pids = cc.addprocs(2)
    values = scrape(endpoint.url)
    workers, worker_seconds, calls, call_seconds = (a - b for a, b in zip(_launch_figures(values), before, strict=True))
    assert (workers, calls) == (2, 1)
    own = [cluster.PGRP.workers[p].joined - cluster.PGRP.workers[p].launched for p in pids]
    assert all(0 < seconds < call_seconds for seconds in own)  # each joined before its addprocs returned
    assert worker_seconds == pytest.approx(sum(own))  # each worker's own time, not the call's
    buckets = [
        (k, v) for k, v in values.items() if k.startswith('clustercore_worker_launch_seconds_bucket{manager="local"')
    ]
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1] == (
        'clustercore_worker_launch_seconds_bucket{manager="local",le="+Inf"}',
        values['clustercore_worker_launch_seconds_count{manager="local"}'],
    )


SEEDED = """
import clustercore as cc
from clustercore.engine import cluster
from clustercore.metrics import metrics_text

cc.addprocs(2)  # before the metrics begin
print([l for l in metrics_text().splitlines() if "launch_seconds_count" in l or "addprocs_seconds_count" in l])
"""


def test_the_workers_there_when_the_metrics_begin_count_their_launches() -> None:
    env = {**os.environ, "CLUSTERCORE_ATTACH": "0"}
    done = subprocess.run([sys.executable, "-c", SEEDED], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['clustercore_worker_launch_seconds_count{manager=\"local\"} 2']"


def test_a_worker_that_joins_as_the_metrics_begin_is_counted_once(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Joined after the workers there were seeded, announced before the listener was registered:
    # the listener is registered in the same critical section as the seeding, and first.
    from clustercore import metrics

    [pid] = cc.addprocs(1)
    w = cluster.PGRP.workers[pid]
    joined = w.joined
    fresh_state = {"_begun": [False], "_worker_launches": {}, "_addprocs": {}, "_last_launch": [0.0]}
    for name, value in {**fresh_state, "_seeded": set(), "_left": [0]}.items():
        monkeypatch.setattr(metrics, name, value)  # as if the metrics had never begun in this process
    monkeypatch.setattr(cluster.PGRP, "joined_listeners", [])
    monkeypatch.setattr(cluster.PGRP, "left_listeners", [])
    monkeypatch.setattr(w, "joined", 0.0)  # still joining as the metrics begin
    register = cluster.on_worker_joined

    def joins_as_the_listener_registers(listener: cluster.WorkerListener) -> None:
        w.joined = joined  # it joins, and its addprocs announces it
        cluster.announce_joined([pid])
        register(listener)

    monkeypatch.setattr(cluster, "on_worker_joined", joins_as_the_listener_registers)
    metrics._begin()
    assert metrics._worker_launches["local"].count == 1
    cluster.announce_joined([pid])  # an announcement after the seeding does not count it again
    assert metrics._worker_launches["local"].count == 1
