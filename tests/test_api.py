"""The public API is exactly docs/API.md's."""

from __future__ import annotations

import re
from pathlib import Path

import clustercore as cc

API = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def documented_names() -> set[str]:
    text = API.read_text()
    names = set()
    for cell in re.findall(r"^\| `([^`]+)`", text, flags=re.M):
        for call in re.split(r"`, `|`/`|, ", cell):
            match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)", call)
            if match:
                names.add(match.group(1))
    for extra in re.findall(r"`(\w+)\(", text):
        names.add(extra)
    return names


def test_all_matches_the_api_document() -> None:
    documented = documented_names() & set(dir(cc)) | {"RRID", "CapturedException"}
    assert set(cc.__all__) >= {n for n in documented if not n.startswith("_")} - {"launch", "manage", "kill", "connect"}
    for name in cc.__all__:
        assert hasattr(cc, name), name


def test_every_api_function_exists() -> None:
    expected = {
        "addprocs", "nprocs", "nworkers", "procs", "workers", "rmprocs", "interrupt", "myid",
        "remotecall", "remotecall_fetch", "remotecall_wait", "remote_do", "spawnat", "fetchfrom",
        "everywhere", "distributed_for", "sync", "remote", "Future", "RemoteChannel", "fetch", "put",
        "take", "isready", "wait", "remoteref_id", "channel_from_id", "Channel", "RemoteException",
        "ProcessExitedException", "AbstractWorkerPool", "WorkerPool", "CachingPool", "default_worker_pool",
        "clear", "Executor", "pmap", "ClusterManager", "WorkerConfig", "init_worker", "start_worker",
        "process_messages", "worker_id_from_socket", "cluster_cookie", "RRID", "CapturedException",
        "ExceptionStandIn", "TLSCredentials", "worker_info", "WorkerDetails",
        "status", "WorkerStatus", "calls_in_flight", "CallInFlight", "allow_attach",
        "trace", "Trace", "TraceEvent", "serve_metrics", "share",
    }  # fmt: skip
    assert expected == set(cc.__all__)
