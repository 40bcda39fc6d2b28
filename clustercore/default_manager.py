"""Built-in hook implementations: the defaults every manager gets.

Registered like an external plugin, marked ``trylast`` so a plugin's own
implementation wins. They do what Julia's defaults do: ``connect`` reads the
worker's address line (or takes ``host``/``port``) and opens TCP; ``kill``
asks the worker to exit, then ends ``config.process`` if there is one.
"""

from __future__ import annotations

import subprocess
from typing import Any

from .hooks import hookimpl
from .managers import (
    ClusterManager,
    WorkerConfig,
    connect_to_worker,
    read_worker_host_port,
)

EXIT_TIMEOUT = 5.0
TERM_TIMEOUT = 5.0


@hookimpl(trylast=True)
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    if config.connect_at is not None:  # worker-to-worker: the address pid 1 told us
        host, port = config.connect_at
        sock = connect_to_worker(host, port)
        return sock, sock
    if config.io is not None:
        bind_addr, port = read_worker_host_port(pid, config)
        host = config.host or bind_addr
    elif config.host is not None and config.port is not None:
        host, port = config.host, config.port
        bind_addr = config.bind_addr or host
    else:
        raise ValueError(f"worker {pid}: WorkerConfig needs io, or host and port, to connect")
    config.host, config.port = host, port
    host = host.rsplit("@", 1)[-1]
    sock = connect_to_worker(host, port)
    # the address other workers use to reach this one
    config.connect_at = (sock.getpeername()[0] if bind_addr in ("0.0.0.0", "::") else bind_addr, port)
    return sock, sock


@hookimpl(trylast=True)
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool:
    from .processes import remote_exit

    remote_exit(pid)
    process = config.process
    if isinstance(process, subprocess.Popen):
        end_process(process)
    return True


def end_process(
    process: subprocess.Popen[Any], exit_timeout: float = EXIT_TIMEOUT, term_timeout: float = TERM_TIMEOUT
) -> None:
    """Julia's LocalManager ladder: wait for a graceful exit, then SIGTERM, then SIGKILL."""
    try:
        process.wait(exit_timeout)
        return
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        process.wait(term_timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@hookimpl(trylast=True)
def manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> bool:
    return True
