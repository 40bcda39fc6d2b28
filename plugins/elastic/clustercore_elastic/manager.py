"""``ElasticManager``: the driver listens, and workers started by anyone with the cookie join.

Julia's ``ElasticManager`` (ClusterManagers.jl): a listener on the driver, a
queue of connections waiting to be added, and a loop that calls ``addprocs``
on the manager whenever the queue has some, its ``launch`` handing them over.
Here the listener first makes every connection prove the cookie
(:mod:`.admission`), and the joined worker is served over the connection it
dialed (no second connection from the driver to the worker), so a worker
behind a firewall or NAT that lets it dial out can join.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Condition
from typing import Any

import clustercore
from clustercore.plugin import ClusterManager, WorkerConfig, cluster_cookie, report_launched, request_exit

from .listener import Admitted, Listener

log = logging.getLogger(__name__)

DEFAULT_PORT = 9009  # Julia's
TOPOLOGIES = ("all_to_all", "master_worker")
BATCH = 64  # joins per addprocs at most
_BATCH_PARAM = "elastic_batch"  # how the manager's own addprocs hands launch the connections to add
_listening: list[ElasticManager] = []  # started and not closed, oldest first
_listening_lock = threading.Lock()


def managers() -> list[ElasticManager]:
    """The elastic managers of this process that listen, oldest first (``addprocs("elastic", ...)``
    returns pids, as every ``addprocs`` does: this is how to reach the manager it started)."""
    with _listening_lock:
        return list(_listening)


@dataclass(eq=False)
class ElasticManager(ClusterManager):
    """Listen on ``address``; every worker that dials it and proves the cookie joins the cluster.

    ``address``: ``"HOST:PORT"``, ``"[V6]:PORT"`` or ``(host, port)``; port 0 picks a free
    one (see :attr:`address`). ``on_join(pid)`` is called for each worker once it has
    joined (on the manager's thread: keep it short). ``topology`` and ``lazy`` are those of
    the workers it adds (they must match the running cluster's, as for any ``addprocs``).
    ``handshake_timeout``: seconds a connection has to prove the cookie and send its
    address; ``max_pending``: connections that may be doing so at once.

    Nothing is opened until ``clustercore.addprocs(manager)`` (or :meth:`start`);
    :func:`clustercore_elastic.listen` does both.
    """

    address: str | tuple[str, int] = (
        "127.0.0.1",
        DEFAULT_PORT,
    )  # (host, port) once checked; the real port once started
    on_join: Callable[[int], object] | None = None
    topology: str = "all_to_all"
    lazy: bool = True
    handshake_timeout: float = 10.0
    max_pending: int = 128
    _handed_over: set[Admitted] = field(init=False, repr=False, default_factory=set)
    _cond: threading.Condition = field(init=False, repr=False, default_factory=threading.Condition)
    _listener: Listener | None = field(init=False, repr=False, default=None)
    _queue: list[Admitted] = field(init=False, repr=False, default_factory=list)
    _active: set[int] = field(init=False, repr=False, default_factory=set)
    _left: set[int] = field(init=False, repr=False, default_factory=set)
    _failed: int = field(init=False, repr=False, default=0)
    _closed: bool = field(init=False, repr=False, default=False)
    _thread: threading.Thread | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.address = parse_address(self.address)
        if self.on_join is not None and not callable(self.on_join):
            raise TypeError(f"on_join must be a callable taking a pid, not {type(self.on_join).__name__}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"ElasticManager's topology must be one of {', '.join(TOPOLOGIES)}, not {self.topology!r}")
        if not isinstance(self.lazy, bool):
            raise TypeError("lazy must be True or False")
        if isinstance(self.handshake_timeout, bool) or not isinstance(self.handshake_timeout, (int, float)):
            raise TypeError("handshake_timeout must be a number of seconds")
        if not self.handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be positive, not {self.handshake_timeout!r}")
        if isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int) or self.max_pending < 1:
            raise ValueError(f"max_pending must be a positive number of connections, not {self.max_pending!r}")

    # --- what users call ---------------------------------------------------------------

    def start(self) -> None:
        """Start listening (once; ``addprocs(manager)`` calls it). ``OSError`` if the address is taken."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self!r} was closed")
            if self._listener is not None:
                return
            host, port = parse_address(self.address)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                raise OSError(
                    exc.errno, f"the elastic manager cannot listen on {self._shown()}: {exc.strerror}"
                ) from exc
            self.address = (host, sock.getsockname()[1])  # the real port, if 0 was given
            self._listener = Listener(sock, cluster_cookie(), self._admit, self.handshake_timeout, self.max_pending)
            self._thread = threading.Thread(target=self._add_joiners, name="clustercore-elastic-join", daemon=True)
        with _listening_lock:
            _listening.append(self)
        self._listener.start()
        self._thread.start()
        log.info("elastic manager listening on %s", self._shown())

    def workers(self) -> list[int]:
        """The pids of the workers it added that are still in the cluster."""
        with self._cond:
            return sorted(self._active)

    def rejected(self) -> dict[str, int]:
        """How many connections the listener turned away, by reason (``"wrong cookie"``, ...)."""
        listener = self._listener
        return {} if listener is None else dict(listener.rejected)

    def failed_joins(self) -> int:
        """Connections that proved the cookie but whose ``addprocs`` failed (logged as warnings)."""
        with self._cond:
            return self._failed

    def wait_for(self, n: int, timeout: float | None = None) -> list[int]:
        """Wait until at least ``n`` of its workers are in the cluster; their pids.

        ``TimeoutError`` after ``timeout`` seconds, saying how many joined, what was
        rejected and the command that joins a worker.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"wait_for needs a number of workers, not {n!r}")
        with self._cond:
            if self._listener is None and not self._closed:
                raise RuntimeError("the elastic manager is not listening yet: clustercore.addprocs(manager) first")
            if not self._cond.wait_for(lambda: len(self._active) >= n or self._closed, timeout):
                raise TimeoutError(self._shortfall(n, timeout))
            if len(self._active) < n:
                raise RuntimeError(
                    f"the elastic manager at {self._shown()} was closed with {len(self._active)} of {n} workers"
                )
            return sorted(self._active)

    def join_command(self, cookie_file: str | None = None) -> str:
        """The shell command that joins a worker (the cookie from ``cookie_file``, else on stdin)."""
        host, port = parse_address(self.address)
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        cmd = [sys.executable, "-m", "clustercore", "worker", "--join", where]
        if cookie_file is not None:
            cmd += ["--cookie-file", cookie_file]
        return shlex.join(cmd)

    def write_cookie(self, path: str | os.PathLike[str]) -> None:
        """Write the cluster cookie to a new file at ``path`` readable only by you (mode 0600),
        for ``--cookie-file``; an existing file is an error (``FileExistsError``)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cluster_cookie() + "\n")

    def close(self) -> None:
        """Stop listening; connections not yet joined are closed. Workers that joined stay
        (remove them with ``rmprocs``). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            listener, queued = self._listener, self._queue[:]
            self._queue.clear()
            self._cond.notify_all()
        with _listening_lock:
            if self in _listening:
                _listening.remove(self)
        if listener is not None:
            listener.close()
        for admitted in queued:
            admitted.sock.close()

    def __enter__(self) -> ElasticManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._cond:
            state = "closed" if self._closed else "listening" if self._listener else "not started"
            return (
                f"ElasticManager({self._shown()}, {state}, workers={sorted(self._active)}, waiting={len(self._queue)})"
            )

    # --- the hooks ---------------------------------------------------------------------

    def launch_workers(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
        """``addprocs(manager)``: start listening; the manager's own ``addprocs`` calls also
        hand over the connections that proved the cookie (Julia's ``launch``)."""
        self.start()
        for admitted in params.get(_BATCH_PARAM) or ():
            with self._cond:
                self._handed_over.add(admitted)  # the core closes it from now on
            config = WorkerConfig(
                host=admitted.host, port=admitted.port, connect_at=(admitted.host, admitted.port), userdata=admitted
            )
            report_launched(launched, launch_ntfy, config)

    def connect_worker(self, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        """The connection the worker dialed is its link (the core's handshake runs on it next)."""
        admitted: Admitted = config.userdata
        return admitted.sock, admitted.sock

    def left(self, pid: int) -> None:
        """``manage(..., "deregister")``: the worker left the cluster or was removed."""
        with self._cond:
            self._active.discard(pid)
            self._left.add(pid)
            self._cond.notify_all()

    def end_worker(self, pid: int) -> None:
        """``kill``: ask the worker to exit; the core closes the link if it does not."""
        with contextlib.suppress(Exception):
            request_exit(pid)

    # --- the manager's thread ------------------------------------------------------------

    def _admit(self, admitted: Admitted) -> None:
        """From the listener's thread: a connection proved the cookie."""
        with self._cond:
            if self._closed:
                admitted.sock.close()
                return
            self._queue.append(admitted)
            self._cond.notify_all()

    def _add_joiners(self) -> None:
        """Julia's ``process_pending_connections``: ``addprocs`` whenever some are waiting."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if self._closed:
                    return
                batch, self._queue[:] = self._queue[:BATCH], self._queue[BATCH:]
            try:
                pids = clustercore.addprocs(self, topology=self.topology, lazy=self.lazy, **{_BATCH_PARAM: batch})
            except Exception as exc:  # noqa: BLE001 - one failed batch must not stop the listener
                with self._cond:
                    self._failed += len(batch)
                    unused = [a for a in batch if a not in self._handed_over]
                    self._handed_over.difference_update(batch)
                for admitted in unused:  # addprocs refused before launch (the topology, say)
                    admitted.sock.close()
                log.warning("%d worker(s) from %s could not join: %s", len(batch), _peers(batch), exc)
                continue
            with self._cond:
                self._handed_over.difference_update(batch)
                joined = [pid for pid in pids if pid not in self._left]
                self._active.update(joined)
                self._cond.notify_all()
            for pid in joined:
                log.info("worker %d joined through the elastic manager at %s", pid, self._shown())
                if self.on_join is not None:
                    try:
                        self.on_join(pid)
                    except Exception:
                        log.exception("the elastic manager's on_join callback failed for worker %d", pid)

    def _shown(self) -> str:
        host, port = parse_address(self.address)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _shortfall(self, n: int, timeout: float | None) -> str:
        text = f"{len(self._active)} of {n} workers joined the elastic manager at {self._shown()} within {timeout:g} s"
        listener = self._listener
        if listener is not None and listener.rejected:
            counts = ", ".join(f"{reason}: {k}" for reason, k in sorted(listener.rejected.items()))
            text += f"; rejected connections ({counts}), the latest: {listener.latest_rejection}"
        if self._failed:
            text += f"; {self._failed} proved the cookie but failed to join (see the log)"
        return text + f". Start workers with: {self.join_command('COOKIE_FILE')} (or the cookie on stdin)"


def _peers(batch: list[Admitted]) -> str:
    return ", ".join(a.peer for a in batch[:5]) + (f" and {len(batch) - 5} more" if len(batch) > 5 else "")


def parse_address(address: object) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[V6]:PORT"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = text.rpartition(":")
        if not host or not port_text.isdigit():
            raise ValueError(f"an elastic address is HOST:PORT or [V6]:PORT, not {address!r}")
        port: object = int(port_text)
    elif isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if not isinstance(host, str) or not host:
            raise TypeError(f"an elastic address's host must be a non-empty str, not {host!r}")
    else:
        raise TypeError(f"an elastic address is 'HOST:PORT' or (host, port), not {address!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"an elastic address's port must be 0..65535, not {port!r}")
    return host, port
