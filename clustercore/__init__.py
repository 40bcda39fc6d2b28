"""clustercore: Julia's Distributed for Python.

pid 1 is the driver; workers are pids 2, 3, ... added by a cluster manager
(local processes, SSH hosts, Slurm tasks, Kubernetes pods). See the README
and ``docs/`` for the model; every public name is listed in ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Each public name and the module that defines it. Modules load on first use
# (PEP 562), so a worker imports only what it runs and ``import clustercore``
# stays fast.
_HOMES = {
    "attach": ("allow_attach",),
    "calls": (
        "fetch", "fetchfrom", "isready", "put", "remote_do", "remotecall", "remotecall_fetch",
        "remote", "remotecall_wait", "spawnat", "take", "wait",
    ),
    "channels": ("Channel", "RemoteChannel", "channel_from_id"),
    "engine.cluster": ("cluster_cookie", "myid", "nprocs", "nworkers", "procs", "workers"),
    "errors": ("CapturedException", "ExceptionStandIn", "ProcessExitedException", "RemoteException"),
    "executor": ("Executor",),
    "links.credentials": ("TLSCredentials",),
    "engine.hooks": ("hookimpl",),
    "macros": ("clear", "distributed_for", "everywhere"),
    "metrics": ("serve_metrics",),
    "engine.managers": ("ClusterManager", "WorkerConfig"),
    "parallelmap": ("pmap",),
    "processes": ("addprocs", "interrupt", "rmprocs", "worker_id_from_socket"),
    "engine.workerinfo": ("WorkerDetails", "worker_info"),
    "engine.refs": ("RRID",),
    "engine.remoterefs": ("Future", "remoteref_id"),
    "clusterstatus": ("CallInFlight", "WorkerStatus", "calls_in_flight", "status"),
    "sharing": ("share",),
    "syncblock": ("sync",),
    "tracing": ("Trace", "TraceEvent", "trace"),
    "engine.worker": ("init_worker", "process_messages", "start_worker"),
    "workerpool": ("AbstractWorkerPool", "CachingPool", "WorkerPool", "default_worker_pool"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'clustercore' has no attribute {name!r}")
    value = getattr(_import_whole(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def _import_whole(module: str) -> object:
    """Import ``module`` with interrupts held until the import is over (Ctrl-C on the main
    thread, ``interrupt()`` in a served call): a ``KeyboardInterrupt`` that lands inside
    importlib can leave its global lock held, after which every import in every thread
    (the engine's included) waits forever."""
    import threading

    if threading.current_thread() is threading.main_thread():
        from .sigint import call_holding_sigint

        return call_holding_sigint(importlib.import_module, module)
    from .links.connection import THREAD

    if THREAD.user_call is None:
        return importlib.import_module(module)
    with THREAD.user_call.interrupts_held():  # a served call, which interrupt() may hit
        return importlib.import_module(module)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})


if TYPE_CHECKING:
    from .attach import allow_attach
    from .calls import (
        fetch,
        fetchfrom,
        isready,
        put,
        remote,
        remote_do,
        remotecall,
        remotecall_fetch,
        remotecall_wait,
        spawnat,
        take,
        wait,
    )
    from .channels import Channel, RemoteChannel, channel_from_id
    from .clusterstatus import CallInFlight, WorkerStatus, calls_in_flight, status
    from .engine.cluster import cluster_cookie, myid, nprocs, nworkers, procs, workers
    from .engine.hooks import hookimpl as hookimpl
    from .engine.launching import WorkerConfig
    from .engine.managers import ClusterManager
    from .engine.refs import RRID
    from .engine.remoterefs import Future, remoteref_id
    from .engine.worker import init_worker, process_messages, start_worker
    from .engine.workerinfo import WorkerDetails, worker_info
    from .errors import CapturedException, ExceptionStandIn, ProcessExitedException, RemoteException
    from .executor import Executor
    from .links.credentials import TLSCredentials
    from .macros import clear, distributed_for, everywhere
    from .metrics import serve_metrics
    from .parallelmap import pmap
    from .processes import addprocs, interrupt, rmprocs, worker_id_from_socket
    from .sharing import share
    from .syncblock import sync
    from .tracing import Trace, TraceEvent, trace
    from .workerpool import AbstractWorkerPool, CachingPool, WorkerPool, default_worker_pool

__all__ = [
    "RRID",
    "AbstractWorkerPool",
    "CachingPool",
    "CallInFlight",
    "CapturedException",
    "Channel",
    "ClusterManager",
    "ExceptionStandIn",
    "Executor",
    "Future",
    "ProcessExitedException",
    "RemoteChannel",
    "RemoteException",
    "TLSCredentials",
    "Trace",
    "TraceEvent",
    "WorkerConfig",
    "WorkerDetails",
    "WorkerPool",
    "WorkerStatus",
    "addprocs",
    "allow_attach",
    "calls_in_flight",
    "channel_from_id",
    "clear",
    "cluster_cookie",
    "default_worker_pool",
    "distributed_for",
    "everywhere",
    "fetch",
    "fetchfrom",
    "init_worker",
    "interrupt",
    "isready",
    "myid",
    "nprocs",
    "nworkers",
    "pmap",
    "process_messages",
    "procs",
    "put",
    "remote",
    "remote_do",
    "remotecall",
    "remotecall_fetch",
    "remotecall_wait",
    "remoteref_id",
    "rmprocs",
    "serve_metrics",
    "share",
    "spawnat",
    "start_worker",
    "status",
    "sync",
    "take",
    "trace",
    "wait",
    "worker_id_from_socket",
    "worker_info",
    "workers",
]
