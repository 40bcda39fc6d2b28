"""What launching and reaching a worker takes: ``WorkerConfig``, the worker's command
and environment, its output and address line, the TCP dial, ending its process.

Plugins reach these through :mod:`clustercore.plugin`; the manager classes are in
:mod:`.managers`.
"""

from __future__ import annotations

import collections
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from ..links.dial import connect_to_worker
from .cluster import worker_timeout

ADDRESS_LINE = re.compile(r"clustercore_worker:(\d+)#(\S+)")


def parse_address_line(line: str) -> tuple[str, int] | None:
    """``(host, port)`` if ``line`` is a worker's whole ``clustercore_worker:PORT#HOST`` line
    (the whole line: not one that quotes it)."""
    match = ADDRESS_LINE.fullmatch(line.strip())
    return None if match is None else (match.group(2), int(match.group(1)))


@dataclass(eq=False)
class WorkerConfig:
    """How to reach and manage one worker (Julia's ``WorkerConfig``); all fields optional."""

    io: IO[Any] | Any | None = None
    host: str | None = None
    port: int | None = None
    count: int | str | None = None
    exename: str | None = None
    exeflags: tuple[str, ...] | list[str] | None = None
    userdata: Any = None
    tunnel: bool | None = None
    bind_addr: str | None = None
    sshflags: tuple[str, ...] | list[str] | None = None
    max_parallel: int | None = None
    connect_at: Any = None
    process: Any = None
    ospid: int | None = None
    environ: dict[str, Any] = field(default_factory=dict)
    ident: Any = None
    connect_idents: list[Any] | None = None
    enable_threaded_blas: bool | None = None


EXIT_TIMEOUT = 5.0
TERM_TIMEOUT = 5.0


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


def worker_command(
    params: dict[str, Any], *, bind_to: str | None = None, lifeline: bool = False, link_fd: int | None = None
) -> list[str]:
    """The argv that starts ``clustercore worker`` with the launch parameters."""
    cmd = [str(params.get("exename") or sys.executable), *map(str, params.get("exeflags") or ())]
    cmd += ["-m", "clustercore", "worker"]
    if bind_to:
        cmd += ["--bind-to", bind_to]
    if lifeline:
        cmd.append("--lifeline")
    if link_fd is not None:
        cmd += ["--link-fd", str(link_fd)]
    return cmd


def worker_environment(params: dict[str, Any]) -> dict[str, str]:
    """Variables a launched worker needs on top of its inherited environment."""
    env = {str(k): str(v) for k, v in (params.get("env") or {}).items()}
    if not params.get("enable_threaded_blas"):
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
    env.setdefault("CLUSTERCORE_WORKER_TIMEOUT", str(worker_timeout()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# --- descriptors -------------------------------------------------------------------

LINK_DESCRIPTORS = 2  # what the driver holds per worker link: its socket and its reader's epoll
_DESCRIPTOR_HEADROOM = 64  # for whatever else is opened meanwhile


def reserve_descriptors(count: int, what: str) -> None:
    """Make room for ``count`` more open file descriptors in this process, before
    starting what needs them: past the soft ``RLIMIT_NOFILE`` it is raised to the hard
    one (as servers do); if even that is too few, ``OSError(EMFILE)`` names the limit."""
    import errno
    import os
    import resource

    try:
        in_use = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError:
        return  # no way to count them here: the kernel will say EMFILE if it comes to that
    need = in_use + count + _DESCRIPTOR_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        for new_soft in (hard, need):  # the hard limit itself may be past the kernel's nr_open
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            except (ValueError, OSError):
                continue
            import logging

            logging.getLogger(__name__).info("raised the soft RLIMIT_NOFILE from %d to %d for %s", soft, new_soft, what)
            return
    raise OSError(
        errno.EMFILE,
        f"{what} needs {count} more file descriptors in this process, which has {in_use} open, but its "
        f"RLIMIT_NOFILE allows {_limit_text(hard)} (hard limit; soft {_limit_text(soft)}): raise the hard limit "
        f"(ulimit -Hn, LimitNOFILE= for a systemd service, nofile in /etc/security/limits.conf) or add fewer workers",
    )


def _limit_text(value: int) -> str:
    import resource

    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


# --- the worker's output and its address line ---------------------------------------

output_watchers: list[Callable[[str], None]] = []  # testing.watch_worker_output adds to it


def emit_worker_output(text: str) -> None:
    """Print one forwarded line (``From worker N:\t...``) on stdout; watchers see it too."""
    for watcher in tuple(output_watchers):
        watcher(text)
    print(text, flush=True)


class _Printer:
    """One thread printing the lines of every stream that delivers its own, in the order
    they came: a stuck stdout holds it, never the threads that deliver. Nothing a line's
    printing raises ends it (a broken stdout or watcher is said once)."""

    def __init__(self) -> None:
        self._lines: queue.SimpleQueue[tuple[str, Callable[[], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False
        self._failures: set[type[BaseException]] = set()

    def print(self, text: str, done: Callable[[], None]) -> None:
        with _output_changed:
            _unprinted[0] += 1
        self._lines.put((text, done))
        if not self._started:
            with self._lock:
                if not self._started:
                    threading.Thread(target=self._run, name="clustercore-output", daemon=True).start()
                    self._started = True

    def _run(self) -> None:
        while True:
            text, done = self._lines.get()
            try:
                emit_worker_output(text)
            except (OSError, ValueError):
                pass  # stdout is closed: the line goes nowhere, as it would from a thread of its own
            except Exception as exc:  # noqa: BLE001 - a watcher or a replaced stdout: the next line is tried
                if type(exc) not in self._failures:
                    self._failures.add(type(exc))
                    import logging

                    logging.getLogger(__name__).warning("printing a worker's output failed: %r", exc)
            finally:
                done()
                with _output_changed:
                    _unprinted[0] -= 1
                    _output_changed.notify_all()


_output_changed = threading.Condition()  # a stream ended, or a line was printed
_unprinted = [0]  # lines given to the printer and not printed yet


def drain_worker_output(timeout: float) -> bool:
    """Wait (at most ``timeout`` s) until every worker's output stream has ended and
    every line is printed; whether they have. For a driver about to exit."""
    deadline = time.monotonic() + timeout
    with _output_changed:
        return _output_changed.wait_for(
            lambda: not _forwarders and not _unprinted[0], max(0.0, deadline - time.monotonic())
        )


_printer = _Printer()
_forwarders: dict[int, OutputForwarder] = {}
_ended: collections.deque[OutputForwarder] = collections.deque(maxlen=256)  # the newest that ended
_forwarders_lock = threading.Lock()


class OutputForwarder:
    """Reads a worker's output stream: finds the address line, prints the rest
    prefixed ``From worker N:`` (Julia's ``redirect_worker_output``).

    A stream with ``readline`` is read on a thread of its own. A stream that hands its
    lines on itself costs no thread: ``io.deliver_lines(on_line, on_end)`` (the Local
    plugin's fork server relay does this for all its workers at once). ``on_line(raw,
    done)`` takes each line, in order, on the stream's own thread and never waits: the
    address line is noted there, the others go to the one printer thread, which calls
    ``done()`` once it has printed them (so the stream can hold a worker whose lines
    pile up behind a stuck stdout); ``on_end()`` once after the last line.
    """

    def __init__(self, pid: int, io: Any) -> None:
        self.pid = pid
        self.io = io
        self.address: tuple[str, int] | None = None
        self.seen: list[str] = []
        self.ended = False
        self._found = threading.Event()

    def start(self) -> None:
        deliver = getattr(self.io, "deliver_lines", None)
        if deliver is not None:
            deliver(self._take_delivered, self._finish)
        else:
            threading.Thread(target=self._run, name=f"clustercore-output-{self.pid}", daemon=True).start()

    def _run(self) -> None:
        try:
            for raw in iter(self.io.readline, b"" if not hasattr(self.io, "encoding") else ""):
                text = self._take(raw)
                if text is not None:
                    emit_worker_output(text)
        except (OSError, ValueError):
            pass
        finally:
            self._finish()

    def _take_delivered(self, raw: bytes, done: Callable[[], None]) -> None:
        text = self._take(raw)
        if text is None:
            done()
        else:
            _printer.print(text, done)

    def _take(self, raw: bytes | str) -> str | None:
        """What to print for one line of output; None for the address line."""
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if self.address is None:
            self.address = parse_address_line(line)
            if self.address is not None:
                self._found.set()
                return None
            self.seen.append(line)
            del self.seen[:-50]
        return f"From worker {self.pid}:\t{line}"

    def _finish(self) -> None:
        self.ended = True
        self._found.set()
        with _forwarders_lock:  # the stream has ended: its descriptor goes with it
            if _forwarders.get(id(self.io)) is self:
                del _forwarders[id(self.io)]
            _ended.append(self)  # what it read stays there for a launch error to quote
        with _output_changed:
            _output_changed.notify_all()
        try:
            self.io.close()
        except (OSError, ValueError):
            pass

    def wait_address(self, timeout: float) -> tuple[str, int]:
        if not self._found.wait(timeout):
            raise TimeoutError(
                f"worker {self.pid} did not print its address within {timeout:g} s "
                f"(CLUSTERCORE_WORKER_TIMEOUT); its output so far: {self._output()}"
            )
        if self.address is None:
            raise ConnectionError(f"worker {self.pid} exited before printing its address; its output: {self._output()}")
        return self.address

    def _output(self) -> str:
        return "\n".join(self.seen[-20:]) or "(nothing)"


def forward_worker_output(pid: int, io: Any) -> OutputForwarder:
    """Start (once per stream) forwarding ``io`` as worker ``pid``'s output."""
    with _forwarders_lock:
        forwarder = _forwarders.get(id(io))
        if forwarder is not None and forwarder.io is io:
            return forwarder
        for ended in _ended:
            if ended.io is io:
                return ended
        forwarder = _forwarders[id(io)] = OutputForwarder(pid, io)
    forwarder.start()  # not under the lock: a thread's start waits until it runs, and joins add many at once
    return forwarder


def read_worker_host_port(pid: int, config: WorkerConfig, timeout: float | None = None) -> tuple[str, int]:
    """The ``(host, port)`` a worker printed on ``config.io``."""
    return forward_worker_output(pid, config.io).wait_address(worker_timeout() if timeout is None else timeout)


def default_connect(pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    """Julia's default ``connect``: the address line on ``config.io`` (or host/port), then TCP."""
    if config.connect_at is not None:  # worker-to-worker: the address pid 1 told us
        host, port = config.connect_at
        sock = connect_to_worker(host, port, worker_timeout())
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
    sock = connect_to_worker(host, port, worker_timeout())
    # the address other workers use to reach this one
    config.connect_at = (sock.getpeername()[0] if bind_addr in ("0.0.0.0", "::") else bind_addr, port)
    return sock, sock
