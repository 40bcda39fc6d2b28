"""``connect`` for :class:`SSHManager`: from the driver to a worker it launched.

The worker prints ``clustercore_worker:PORT#ADDR``. Without a tunnel the
driver dials ``ADDR:PORT`` (or the SSH server's address when the worker
printed a loopback or wildcard address and no ``bind_addr`` was given). With
``tunnel=True`` the SSH server dials it for us (a ``direct-tcpip`` channel on
the host's one transport) and the channel itself is the link. Either way
other workers dial ``config.connect_at`` directly, as in Julia.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from clustercore.plugin import (
    WorkerConfig,
    connect_to_worker,
    default_connect,
    forward_worker_output,
    read_worker_address,
    worker_timeout,
)

from .deadline import Deadline
from .errors import SSHLaunchError
from .manager import SSHManager
from .session import WorkerSession
from .tunnel import TunnelStream

EXIT_STATUS_WAIT = 2.0


def _is_local(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _output(pid: int, session: WorkerSession, config: WorkerConfig) -> str:
    seen = getattr(forward_worker_output(pid, config.io), "seen", [])
    return "".join(session.early_output) + "\n".join(seen)


def _address(pid: int, config: WorkerConfig, session: WorkerSession, deadline: Deadline) -> tuple[str, int]:
    try:
        return read_worker_address(pid, config, timeout=deadline.left())
    except TimeoutError as exc:
        detail = f"worker {pid} did not print its address within {deadline.seconds:g} s (CLUSTERCORE_WORKER_TIMEOUT)"
        raise SSHLaunchError(session.host, "worker start", detail, _output(pid, session, config)) from exc
    except ConnectionError as exc:
        session.wait(EXIT_STATUS_WAIT)
        detail = f"worker {pid} exited with status {session.exit_status()} before printing its address"
        raise SSHLaunchError(session.host, "worker start", detail, _output(pid, session, config)) from exc


def connect_worker(manager: SSHManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    """The driver's link to worker ``pid``; the default TCP connect for anything else."""
    session = config.userdata
    if config.connect_at is not None or not isinstance(session, WorkerSession):
        return default_connect(pid, config)
    deadline = session.deadline or Deadline(worker_timeout())
    printed, port = _address(pid, config, session, deadline)
    printed = printed.strip("[]")
    ssh_peer = session.connection.peer_ip or session.connection.settings.hostname
    # without a bind_addr the worker listens where this SSH connection arrived: dial the
    # address we reached the host on (behind a 1:1 NAT the one it prints is not ours to reach)
    reachable = printed if config.bind_addr and not _is_local(printed) else ssh_peer
    config.port, config.connect_at = port, (reachable, port)
    if manager.tunnel:
        target = "127.0.0.1" if printed in ("0.0.0.0", "::") else printed
        stream = TunnelStream(session.connection.forward(target, port, deadline), session.host)
        return stream, stream
    try:
        sock = connect_to_worker(reachable, port, timeout=deadline.left())
    except ConnectionError as exc:
        raise SSHLaunchError(
            session.host,
            "worker connect",
            f"{exc}; if the host is reachable only through SSH, use tunnel=True",
        ) from exc
    return sock, sock
