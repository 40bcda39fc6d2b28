"""``SSHManager``: workers on remote hosts over SSH (Julia's ``SSHManager``), as a validated dataclass.

Everything is checked when the manager is built, before any connection:
machine specs, ``sshflags``, ``max_parallel`` and ``shell``. The manager also
owns its SSH connections (one per host, shared by that host's workers) and
the per-host bound on concurrent session starts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clustercore.plugin import ClusterManager

from .machinefile import parse_machine_file
from .remote_command import SHELLS
from .spec import MachineSpec, parse_machines
from .sshflags import SSHFlags, parse_sshflags

if TYPE_CHECKING:
    from .connection import HostConnection
    from .hostconfig import HostSettings

DEFAULT_MAX_PARALLEL = 10


@dataclass(eq=False)
class SSHManager(ClusterManager):
    """Start workers over SSH.

    ``machines``: specs ``"[user@]host[:port] [bind_addr[:port]]"`` or ``(spec, count)``
    pairs, ``count`` an int or ``"auto"``. ``tunnel``: reach the workers through
    the SSH connection instead of dialling them. ``sshflags``: ``-i``, ``-p``,
    ``-l``, ``-F``, ``-J``, ``-o Key=Value`` as for ``ssh``. ``max_parallel``:
    at most this many sessions being started at once per host. ``shell``:
    the remote login shell family, ``"posix"`` or ``"csh"``. ``machine_file``: read
    ``machines`` from a Julia machine file instead (``clustercore --machine-file``).
    """

    machines: Sequence[Any] = ()
    tunnel: bool = False
    sshflags: str | Sequence[str] = ()
    max_parallel: int = DEFAULT_MAX_PARALLEL
    shell: str = "posix"
    machine_file: str | None = None
    specs: list[MachineSpec] = field(init=False, repr=False)
    flags: SSHFlags = field(init=False, repr=False)
    _connections: dict[tuple[Any, ...], HostConnection] = field(init=False, repr=False, default_factory=dict)
    _starts: dict[tuple[Any, ...], threading.BoundedSemaphore] = field(init=False, repr=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.machine_file is not None:
            if self.machines:
                raise ValueError("give machines or machine_file, not both")
            self.machines = parse_machine_file(self.machine_file)
        self.specs = parse_machines(self.machines)
        self.flags = parse_sshflags(self.sshflags)
        if not isinstance(self.tunnel, bool):
            raise TypeError(f"tunnel must be True or False, not {self.tunnel!r}")
        if isinstance(self.max_parallel, bool) or not isinstance(self.max_parallel, int) or self.max_parallel < 1:
            raise ValueError(f"max_parallel must be a positive int, not {self.max_parallel!r}")
        if self.shell not in SHELLS:
            raise ValueError(f"shell must be one of {', '.join(SHELLS)}, not {self.shell!r}")

    def connection(self, settings: HostSettings, pool: dict[tuple[Any, ...], HostConnection]) -> HostConnection:
        """The (acquired) connection to a host from one launch's ``pool`` (made if needed); call
        ``release()`` when done with it. Each ``addprocs`` call has connections of its own, so
        that cancelling it can close them whole; ``_connections`` holds the latest per host."""
        from .connection import HostConnection

        with self._lock:
            conn = pool.get(settings.pool_key)
            if conn is None or not conn.acquire():
                conn = pool[settings.pool_key] = HostConnection(settings)
                conn.acquire()
            self._connections[settings.pool_key] = conn
            return conn

    def start_slots(self, settings: HostSettings) -> threading.BoundedSemaphore:
        """The semaphore bounding concurrent session starts on this host to ``max_parallel``."""
        with self._lock:
            return self._starts.setdefault(settings.pool_key, threading.BoundedSemaphore(self.max_parallel))
