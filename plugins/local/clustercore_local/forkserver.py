"""A warm process that forks workers: start-up without a fresh interpreter each time.

The driver starts one fork server per set of interpreter settings, with the clustercore worker code already
imported, and talks to it over a Unix socket: each request carries the
worker's settings and, as ancillary file descriptors, the pipe its output
goes to and its end of a Unix socket pair whose other end the driver keeps
as its link to the worker (a Unix socket round trip costs about two thirds
of a loopback TCP one); the answer is the new worker's pid. The server is single-threaded,
so forking it is safe; it exits when the driver's end of the socket closes,
and its children exit when the driver's links to them close. The cookie
travels over the socket, never on a command line.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
import threading
from typing import Any, NamedTuple

_REQUEST_MAX = 1 << 20
_PID = struct.Struct("<i")


# --- the server ------------------------------------------------------------------------


def _serve(control: socket.socket) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    from clustercore import calls, message_handlers, worker  # warm: every child starts with these

    del calls, message_handlers

    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, _REQUEST_MAX, 2)
        except OSError:
            return
        if not data:
            return  # the driver is gone
        request = pickle.loads(data)
        pid = os.fork()
        if pid == 0:
            control.close()
            _become_worker(worker, request, *fds)
        for fd in fds:
            os.close(fd)
        control.sendall(_PID.pack(pid))


def _become_worker(worker: Any, request: dict[str, Any], out_fd: int, link_fd: int) -> None:
    try:
        os.setsid()  # like start_new_session: a Ctrl-C at the driver's terminal is the driver's alone
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.close(null)
        os.close(out_fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["dir"])
        sys.path[0] = request["dir"]  # as for `python -m` started there
        worker.start_worker(
            cookie=request["cookie"],
            bind_to=request["bind_to"],
            close_stdin=False,
            stderr_to_stdout=False,
            driver_link=socket.socket(fileno=link_fd),
        )
    except BaseException as exc:  # noqa: BLE001 - a child must never return into the server's loop
        print(f"clustercore worker failed to start: {exc!r}", file=sys.stderr, flush=True)
    os._exit(1)


# --- the driver's side -----------------------------------------------------------------


def interpreter_settings(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables read at interpreter start-up: a fork server serves one set of them."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith("PYTHON")))


class ForkedWorker(NamedTuple):
    """A worker the fork server started: its pid, its output, the driver's end of its link."""

    ospid: int
    output: Any
    link: socket.socket


class ForkServer:
    """The driver's handle on one fork server."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess  # the driver's side only: the server itself starts without it

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket = mine
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from clustercore_local.forkserver import serve; serve({theirs.fileno()})"],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        theirs.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork_workers(self, request: dict[str, Any], n: int) -> list[ForkedWorker]:
        """Start ``n`` workers, asking for all before waiting for any (the server forks
        them back to back)."""
        pipes = [os.pipe() for _ in range(n)]
        links = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n)]
        message = pickle.dumps(request)
        try:
            with self._lock:
                for (_, write_end), (_, theirs) in zip(pipes, links, strict=True):
                    socket.send_fds(self._socket, [message], [write_end, theirs.fileno()])
                answer = b""
                while len(answer) < n * _PID.size:
                    chunk = self._socket.recv(n * _PID.size - len(answer))
                    if not chunk:
                        raise ConnectionError("the clustercore fork server exited")
                    answer += chunk
        except BaseException:
            for (read_end, _), (mine, _) in zip(pipes, links, strict=True):
                os.close(read_end)
                mine.close()
            raise
        finally:
            for (_, write_end), (_, theirs) in zip(pipes, links, strict=True):
                os.close(write_end)
                theirs.close()
        pids = [pid for (pid,) in _PID.iter_unpack(answer)]
        return [
            ForkedWorker(pid, os.fdopen(read_end, "rb"), mine)
            for pid, (read_end, _), (mine, _) in zip(pids, pipes, links, strict=True)
        ]

    def close(self) -> None:
        self._socket.close()
        try:
            self.process.wait(5)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it did not exit in time
            self.process.kill()
            self.process.wait()


_servers: dict[tuple[tuple[str, str], ...], ForkServer] = {}
_servers_lock = threading.Lock()


def fork_server(env: dict[str, str]) -> ForkServer:
    """The fork server for workers with this environment, started on first use (again if it died)."""
    key = interpreter_settings(env)
    with _servers_lock:
        server = _servers.get(key)
        if server is None or not server.alive():
            server = _servers[key] = ForkServer(env)
        return server


def serve(fd: int) -> None:
    """The fork server's main: serve the driver on the socket ``fd`` until it closes."""
    _serve(socket.socket(fileno=fd))
