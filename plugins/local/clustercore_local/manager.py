"""``LocalManager``: ``np`` worker processes on this machine."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from threading import Condition
from typing import Any

from clustercore.plugin import (
    LINK_DESCRIPTORS,
    ClusterManager,
    WorkerConfig,
    default_connect,
    end_process,
    read_worker_address,
    report_launched,
    request_exit,
    reserve_descriptors,
    worker_command,
    worker_environment,
    worker_secret,
)

from .forkserver import ForkedWorker, fork_server

START_METHODS = ("forkserver", "spawn")
UNJOINED_TERM_TIMEOUT = 5.0  # a worker that never joined: SIGTERM, and this long before SIGKILL


@dataclass
class LocalManager(ClusterManager):
    """Start ``np`` workers here; ``restrict=True`` binds them to 127.0.0.1 only.

    ``start_method="forkserver"`` (the default) forks workers from a warm
    server process started once per driver; ``"spawn"`` starts a fresh
    interpreter for each (always used with a custom ``exename``/``exeflags``).
    """

    np: int = 1
    restrict: bool = True
    start_method: str = "forkserver"
    exit_timeout: float = 15.0
    term_timeout: float = 15.0

    def __post_init__(self) -> None:
        if isinstance(self.np, bool) or not isinstance(self.np, int) or self.np < 1:
            raise ValueError(f"LocalManager needs a positive number of workers, not {self.np!r}")
        if not isinstance(self.restrict, bool):
            raise TypeError("restrict must be True or False")
        if self.start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {', '.join(START_METHODS)}, not {self.start_method!r}")

    def start_workers(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
        bind_to = "127.0.0.1" if self.restrict else "0.0.0.0"
        env = {**os.environ, **worker_environment(params)}
        env.setdefault("CLUSTERCORE_SYS_PATH", os.pathsep.join(project_path()))
        forked = self.start_method == "forkserver" and not (params.get("exename") or params.get("exeflags"))
        what = f"starting {self.np} local worker{'s' if self.np > 1 else ''}"
        check_capacity(self.np, what)
        # the driver holds each worker's link; a spawned worker's output pipe too (a forked
        # one's output comes through its fork server, on one pipe for all)
        reserve_descriptors(self.np * (LINK_DESCRIPTORS + (0 if forked else 1)), what)
        if forked:
            self._fork_workers(params, bind_to, env, launched, launch_ntfy)
        else:
            self._spawn_workers(params, bind_to, env, launched, launch_ntfy)

    def _fork_workers(
        self, params: dict[str, Any], bind_to: str, env: dict[str, str], launched: list[WorkerConfig], ntfy: Condition
    ) -> None:
        server = fork_server(env)
        request = {
            "cookie": worker_secret(),
            "bind_to": bind_to,
            "env": env,
            "dir": str(params.get("dir") or os.getcwd()),
        }

        def started(forked: ForkedWorker) -> None:
            userdata = {"forked": True, "link": forked.link}
            config = WorkerConfig(
                io=forked.output, ospid=forked.ospid, userdata=userdata, process=Unjoined(userdata, ospid=forked.ospid)
            )
            _announce(config, params, launched, ntfy)

        server.fork_workers(request, self.np, started)

    def _spawn_workers(
        self, params: dict[str, Any], bind_to: str, env: dict[str, str], launched: list[WorkerConfig], ntfy: Condition
    ) -> None:
        cookie_line = (worker_secret() + "\n").encode()
        for _ in range(self.np):
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # the driver's link
            try:
                process = subprocess.Popen(
                    worker_command(params, bind_to=bind_to, link_fd=theirs.fileno()),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=params.get("dir") or None,
                    env=env,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,  # a Ctrl-C at the driver's terminal is the driver's alone
                )
            except BaseException:
                mine.close()
                raise
            finally:
                theirs.close()
            assert process.stdin is not None
            process.stdin.write(cookie_line)
            process.stdin.close()
            userdata = {"link": mine}
            config = WorkerConfig(
                io=process.stdout, ospid=process.pid, userdata=userdata, process=Unjoined(userdata, process)
            )
            _announce(config, params, launched, ntfy)

    def connect_worker(self, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        """A worker is reached through the Unix socket pair made for it when it started;
        its TCP address (read from its output, as the default ``connect`` does) is for the
        others."""
        link = config.userdata.pop("link", None) if isinstance(config.userdata, dict) else None
        if link is None:
            return default_connect(pid, config)
        try:
            config.host, config.port = read_worker_address(pid, config)
        except BaseException:
            link.close()
            raise
        config.connect_at = (config.host, config.port)
        return link, link

    def end_worker(self, pid: int, config: WorkerConfig) -> None:
        request_exit(pid)
        spawned = config.process.spawned if isinstance(config.process, Unjoined) else None
        if spawned is not None:
            end_process(spawned, self.exit_timeout, self.term_timeout)
        elif config.ospid:
            end_forked_process(config.ospid, self.exit_timeout, self.term_timeout)


class Unjoined:
    """``WorkerConfig.process`` of a local worker: what the core calls ``kill()`` on when the
    worker never joined (its join failed, or ``addprocs`` was cancelled): the driver's end of
    its link is closed and the process killed at once. ``spawned``: its ``Popen`` if it was
    spawned (a forked worker is the fork server's child)."""

    def __init__(
        self, userdata: dict[str, Any], spawned: subprocess.Popen[bytes] | None = None, ospid: int = 0
    ) -> None:
        self.userdata = userdata
        self.spawned = spawned
        self.ospid = ospid

    def kill(self) -> None:
        link = self.userdata.pop("link", None)
        if link is not None:
            link.close()
        if self.spawned is not None:
            self.spawned.kill()
            self.spawned.wait()  # at once after SIGKILL: our child, reaped here
        elif self.ospid:
            end_forked_process(self.ospid, 0.0, UNJOINED_TERM_TIMEOUT)  # SIGTERM at once, then SIGKILL


def _announce(config: WorkerConfig, params: dict[str, Any], launched: list[WorkerConfig], ntfy: Condition) -> None:
    """Hand a started worker to ``addprocs``, which connects to it."""
    config.enable_threaded_blas = bool(params.get("enable_threaded_blas"))
    report_launched(launched, ntfy, config)


def project_path() -> list[str]:
    """The driver's import path entries that are not its interpreter's own (the script's
    directory, ``PYTHONPATH``, entries added at run time), absolute: local workers get them
    (``CLUSTERCORE_SYS_PATH``), so they import what the driver imports, as Julia's
    workers share its project."""
    install = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    entries: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)  # "": the current directory
        inside = any(path == p or path.startswith(p + os.sep) for p in install)
        if not inside and os.pathsep not in path and path not in entries:
            entries.append(path)
    return entries


# What one local worker takes at least, measured on an idle one: its own memory (pages it
# does not share with the fork server) and its tasks (its process, its accept gate, the
# watchdog its first call starts), plus the one the driver runs for it (its link's reader).
WORKER_MEMORY = 3 << 20
WORKER_TASKS = 3 + 1


def check_capacity(n: int, what: str) -> None:
    """Fail before starting anything if this machine clearly cannot hold ``n`` more workers,
    naming the limit: its available memory, or the kernel's limit on tasks."""
    available = _meminfo("MemAvailable")
    if available is not None and n * WORKER_MEMORY > available:
        raise OSError(
            errno.ENOMEM,
            f"{what} needs at least {n * WORKER_MEMORY >> 20} MiB of memory ({WORKER_MEMORY >> 20} MiB each), but "
            f"this machine has {available >> 20} MiB available (MemAvailable in /proc/meminfo)",
        )
    tasks = _tasks()
    if tasks is not None:
        existing, ceiling, name = tasks
        if existing + n * WORKER_TASKS > ceiling:
            raise OSError(
                errno.EAGAIN,
                f"{what} needs about {n * WORKER_TASKS} more processes and threads ({WORKER_TASKS} each), but "
                f"{existing} of the {ceiling} this machine allows ({name}) exist already",
            )


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _tasks() -> tuple[int, int, str] | None:
    """Tasks (processes and threads) that exist now, and the lower of the kernel's two limits on them."""
    try:
        with open("/proc/loadavg") as f:
            existing = int(f.read().split()[3].split("/")[1])  # "running/existing"
        limits = []
        for name in ("kernel/pid_max", "kernel/threads-max"):
            with open(f"/proc/sys/{name}") as f:
                limits.append((int(f.read()), name.replace("/", ".")))
    except (OSError, ValueError, IndexError):
        return None
    ceiling, name = min(limits)
    return existing, ceiling, name


def end_forked_process(ospid: int, exit_timeout: float, term_timeout: float) -> None:
    """The exit/SIGTERM/SIGKILL ladder for a worker that is not our child, watched through a pidfd."""
    try:
        pidfd = os.pidfd_open(ospid)
    except ProcessLookupError:
        return
    try:
        exited = select.poll()  # not select(): a driver with many workers has descriptors past FD_SETSIZE
        exited.register(pidfd, select.POLLIN)
        for timeout, then in ((exit_timeout, signal.SIGTERM), (term_timeout, signal.SIGKILL)):
            if exited.poll(timeout * 1000):
                return
            try:
                signal.pidfd_send_signal(pidfd, then)
            except ProcessLookupError:
                return
        exited.poll(term_timeout * 1000)
    finally:
        os.close(pidfd)
