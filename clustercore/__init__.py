"""clustercore: Julia's Distributed for Python.

pid 1 is the driver; workers are pids 2, 3, ... added by a cluster manager
(local processes, SSH hosts, Slurm tasks, Kubernetes pods). See the README
and ``docs/`` for the model; every public name is listed in ``__all__``.
"""

from __future__ import annotations

import atexit

from .calls import (
    fetch,
    fetchfrom,
    isready,
    put,
    remote_do,
    remotecall,
    remotecall_fetch,
    remotecall_wait,
    spawnat,
    take,
    wait,
)
from .channels import Channel, RemoteChannel, channel_from_id
from .cluster import cluster_cookie, myid, nprocs, nworkers, procs, workers
from .errors import CapturedException, ProcessExitedException, RemoteException
from .macros import clear, distributed_for, everywhere
from .managers import ClusterManager, WorkerConfig
from .parallelmap import pmap
from .processes import addprocs, interrupt, rmprocs, terminate_all_workers, worker_id_from_socket
from .remoterefs import RRID, Future, remoteref_id
from .syncblock import sync
from .worker import init_worker, process_messages, start_worker
from .workerpool import AbstractWorkerPool, CachingPool, WorkerPool, default_worker_pool, remote

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Names whose modules are imported on first use: workers never pay for them."""
    if name == "Executor":
        from .executor import Executor

        return Executor
    if name == "hookimpl":  # for plugins: ``from clustercore import hookimpl``
        from .hooks import hookimpl

        return hookimpl
    raise AttributeError(f"module 'clustercore' has no attribute {name!r}")


__all__ = [
    "RRID",
    "AbstractWorkerPool",
    "CachingPool",
    "CapturedException",
    "Channel",
    "ClusterManager",
    "Executor",
    "Future",
    "ProcessExitedException",
    "RemoteChannel",
    "RemoteException",
    "WorkerConfig",
    "WorkerPool",
    "addprocs",
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
    "spawnat",
    "start_worker",
    "sync",
    "take",
    "wait",
    "worker_id_from_socket",
    "workers",
]

atexit.register(terminate_all_workers)
