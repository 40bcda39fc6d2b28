"""clustercore: Julia's Distributed for Python.

pid 1 is the driver; workers are pids 2, 3, ... added by a cluster manager
(local processes, SSH hosts, Slurm tasks, Kubernetes pods). See the README
and ``docs/`` for the model; every public name is listed in ``__all__``.
"""

from __future__ import annotations

import atexit

from .cluster import cluster_cookie, myid, nprocs, nworkers, procs, workers
from .errors import CapturedException, ProcessExitedException, RemoteException
from .hooks import hookimpl
from .managers import ClusterManager, WorkerConfig
from .processes import addprocs, interrupt, rmprocs, terminate_all_workers
from .remotecall import (
    fetch,
    fetchfrom,
    isready,
    put,
    remote_do,
    remotecall,
    remotecall_fetch,
    remotecall_wait,
    spawnat,
    wait,
)
from .remoterefs import RRID, Future, remoteref_id
from .worker import init_worker, process_messages, start_worker

__version__ = "0.1.0"

__all__ = [
    "RRID",
    "CapturedException",
    "ClusterManager",
    "Future",
    "ProcessExitedException",
    "RemoteException",
    "WorkerConfig",
    "addprocs",
    "cluster_cookie",
    "fetch",
    "fetchfrom",
    "hookimpl",
    "init_worker",
    "interrupt",
    "isready",
    "myid",
    "nprocs",
    "nworkers",
    "process_messages",
    "procs",
    "put",
    "remote_do",
    "remotecall",
    "remotecall_fetch",
    "remotecall_wait",
    "remoteref_id",
    "rmprocs",
    "spawnat",
    "start_worker",
    "wait",
    "workers",
]

atexit.register(terminate_all_workers)
