"""A warm process that forks workers: start-up without a fresh interpreter each time.

The driver starts one fork server per set of interpreter settings, with the
clustercore worker code already imported, and talks to it over a Unix socket
pair (the *control* socket) and two pipes (*output* and *flow*)::

    driver                                     fork server
      |-- request: settings, n ------------------>|   (the driver's only write)
      |<-- answer: key, pid + link fd (SCM_RIGHTS)|   fork; n answers, or fewer
      |<-- ...                                    |   and an error that ends them
      |<== output pipe: (key, bytes) records =====|   every worker's stdout/stderr
      |== flow pipe: (key, hold/release) ========>|   one worker's output backs up

One request asks for a whole batch; the driver writes it and then only reads
until every answer (or an error answer naming the limit that was hit) has
come, and the server reads a request whole before it answers: the two never
write at once, so neither can fill the other's buffer while it is not
reading. The server makes each worker's Unix socket pair and sends the
driver its end, so the driver holds two descriptors per worker (that link
and its reader's epoll) and the server one: the worker's output pipe, whose
bytes it relays to the driver on one pipe, tagged with the worker's key.
The server never blocks on the driver's pipes. A worker whose output the
driver does not take (its stdout is stuck) is *held*: the server stops
reading that worker's pipe until the driver releases it, so the worker's
writes wait, as they would on a pipe of its own, and the other workers'
output (their address lines) flows on.

The server is single-threaded, so forking it is safe. Its children exit
when the driver's links to them close; it exits when the driver's end of
the control socket has closed and its last child's output has ended. The
cookie travels over the socket, never on a command line.
"""

from __future__ import annotations

import errno
import gc
import os
import pickle
import resource
import select
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from clustercore import remotecall, start_worker
from clustercore.plugin import preload_worker_modules

from .output import WorkerOutput

_WARM = (remotecall,)  # the fork server imports the engine and the calls once: no forked worker imports them

_REQUEST = struct.Struct("<I")  # the length of the pickled request that follows
_REQUEST_MAX = 1 << 20
_ANSWER = struct.Struct("<iiiI")  # worker key, its pid (0: not started), errno, length of the error text that follows
_OUTPUT = struct.Struct("<iI")  # worker key, length of the bytes that follow (0: its output ended)
_FLOW = struct.Struct("<ii")  # worker key, 1: hold its output, 0: release it
_RELAY_HIGH = 1 << 20  # output bytes the server holds for the driver before it stops reading workers
_RELAY_LOW = 1 << 16  # ... and resumes
_READ_SIZE = 1 << 16


# --- the server ------------------------------------------------------------------------


class _Server:
    """The fork server's state: the driver's three channels, and each worker's output pipe."""

    def __init__(self, control: socket.socket, output_fd: int, flow_fd: int) -> None:
        self.control = control
        self.output_fd = output_fd  # non-blocking: the driver reads it
        self.flow_fd = flow_fd
        os.set_blocking(output_fd, False)
        os.set_blocking(flow_fd, False)
        self.poller = select.epoll()
        self.poller.register(control.fileno(), select.EPOLLIN)
        self.poller.register(output_fd, 0)  # EPOLLOUT while records wait
        self.poller.register(flow_fd, select.EPOLLIN)
        self.keys: dict[int, int] = {}  # a worker's output pipe -> its key
        self.pipes: dict[int, int] = {}  # a worker's key -> its output pipe
        self.held: set[int] = set()  # keys of workers whose output the driver holds
        self.flow = b""  # a part of a flow record
        self.relay = bytearray()  # records the driver has yet to read
        self.relaying = True  # False: the driver is gone, drop its output
        self.paused = False  # no worker's pipe is read until the relay drains
        self.next_key = 1

    def run(self) -> None:
        """Serve requests until the driver closes the control socket, and relay output
        until the last worker's pipe closes."""
        serving = True
        while serving or self.keys:
            for fd, events in self.poller.poll():
                if serving and fd == self.control.fileno():
                    if not self.serve_request():
                        serving = False
                        self.poller.unregister(fd)
                        self.control.close()
                else:
                    self.service(fd, events)

    def service(self, fd: int, events: int) -> None:
        if fd in self.keys:
            self.read_worker(fd)
        elif fd == self.flow_fd:
            self.read_flow()
        elif fd == self.output_fd and self.relaying:
            if events & (select.EPOLLERR | select.EPOLLHUP):
                self.stop_relaying()
            else:
                self.flush()

    def pump(self) -> None:
        """Relay what is ready without waiting: between forks, address lines flow on."""
        control = self.control.fileno()
        for fd, events in self.poller.poll(0):
            if fd != control:
                self.service(fd, events)

    # --- requests --------------------------------------------------------------------------

    def serve_request(self) -> bool:
        head = _recv_exactly(self.control, _REQUEST.size)
        if head is None:
            return False
        (size,) = _REQUEST.unpack(head)
        body = _recv_exactly(self.control, size) if size <= _REQUEST_MAX else None
        if body is None:
            return False
        request = pickle.loads(body)
        request["env"] = _environment_changes(request["env"])  # worked out once, not by each child
        try:
            for _ in range(request["n"]):
                if not self.fork_one(request):
                    break  # the answer said why: the batch ends there
                self.pump()
        except OSError:
            return False  # the driver stopped reading: it is gone
        return True

    def fork_one(self, request: dict[str, Any]) -> bool:
        key = self.next_key
        self.next_key += 1
        made: list[int] = []
        try:
            out_r, out_w = os.pipe()
            made += (out_r, out_w)
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            made += (mine.detach(), theirs.detach())
            pid = os.fork()
        except OSError as exc:
            for fd in made:
                os.close(fd)
            self.answer(key, 0, exc.errno or 0, _limit_text(exc, len(self.keys)))
            return False
        if pid == 0:
            self.become_worker(request, out_w, made[3])
        link = made[2]
        os.close(out_w)
        os.close(made[3])
        os.set_blocking(out_r, False)
        self.keys[out_r] = key
        self.pipes[key] = out_r
        self.poller.register(out_r, 0 if self.paused else select.EPOLLIN)
        try:
            self.answer(key, pid, 0, "", link)
        finally:
            os.close(link)
        return True

    def answer(self, key: int, pid: int, error: int, text: str, link: int | None = None) -> None:
        """Blocking: the driver reads every answer before it writes again."""
        data = text.encode()
        record = _ANSWER.pack(key, pid, error, len(data)) + data
        if link is None:
            self.control.sendall(record)
        else:
            socket.send_fds(self.control, [record], [link])

    # --- the workers' output -------------------------------------------------------------

    def read_worker(self, fd: int) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        key = self.keys[fd]
        if not data:  # the worker is gone (or closed its output): so is its pipe
            self.poller.unregister(fd)
            os.close(fd)
            del self.keys[fd], self.pipes[key]
            self.held.discard(key)
        self.relay_record(key, data)

    def read_flow(self) -> None:
        """The driver holds or releases workers' output."""
        try:
            data = os.read(self.flow_fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the driver is gone: release everyone, so their pipes drain and close
            self.poller.unregister(self.flow_fd)
            self.held.clear()
            self.pause(self.paused)
            return
        data = self.flow + data
        whole = len(data) - len(data) % _FLOW.size
        self.flow = data[whole:]
        for key, hold in _FLOW.iter_unpack(data[:whole]):
            if key not in self.pipes:
                continue  # its output ended meanwhile
            if hold:
                self.held.add(key)
            else:
                self.held.discard(key)
            if not self.paused:
                self.poller.modify(self.pipes[key], 0 if hold else select.EPOLLIN)

    def relay_record(self, key: int, data: bytes) -> None:
        if not self.relaying:
            return
        self.relay += _OUTPUT.pack(key, len(data))
        self.relay += data
        self.flush()

    def flush(self) -> None:
        if self.relay and self.relaying:
            try:
                del self.relay[: os.write(self.output_fd, self.relay)]
            except BlockingIOError:
                pass
            except OSError:
                self.stop_relaying()
        if self.relaying:
            self.poller.modify(self.output_fd, select.EPOLLOUT if self.relay else 0)
        if not self.paused and len(self.relay) > _RELAY_HIGH:
            self.pause(True)
        elif self.paused and len(self.relay) < _RELAY_LOW:
            self.pause(False)

    def stop_relaying(self) -> None:
        """The driver closed its end of the output pipe: nobody reads output any more."""
        if self.relaying:
            self.relaying = False
            self.relay.clear()
            self.poller.unregister(self.output_fd)
            if self.paused:
                self.pause(False)

    def pause(self, paused: bool) -> None:
        """Stop (or resume) reading the workers' pipes while the driver catches up."""
        self.paused = paused
        for fd, key in self.keys.items():
            self.poller.modify(fd, 0 if paused or key in self.held else select.EPOLLIN)

    # --- in the child ----------------------------------------------------------------------

    def become_worker(self, request: dict[str, Any], out_fd: int, link_fd: int) -> None:
        try:
            self.poller.close()
            self.control.close()
            os.setsid()  # like start_new_session: a Ctrl-C at the driver's terminal is the driver's alone
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.dup2(link_fd, 3)
            os.closerange(4, _fd_ceiling())  # the server's: other workers' pipes, the driver's channels
            _change_environment(*request["env"])
            os.chdir(request["dir"])
            sys.path[0] = request["dir"]  # as for `python -m` started there
            start_worker(
                cookie=request["cookie"],
                bind_to=request["bind_to"],
                close_stdin=False,
                stderr_to_stdout=False,
                driver_link=socket.socket(fileno=3),
            )
        except BaseException as exc:  # noqa: BLE001 - a child must never return into the server's loop
            print(f"clustercore worker failed to start: {exc!r}", file=sys.stderr, flush=True)
        os._exit(1)


def _environment_changes(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """What makes the server's ``os.environ`` be ``env``: the names to unset and the
    values to set (mostly nothing). Worked out in the server, once for a whole batch:
    each child reading its whole environment cost it ~1 ms at start-up."""
    mine = os.environ
    unset = [name for name in mine if name not in env]
    changed = {name: value for name, value in env.items() if mine.get(name) != value}
    return unset, changed


def _change_environment(unset: list[str], changed: dict[str, str]) -> None:
    """In a child: apply :func:`_environment_changes` (each one a ``unsetenv`` or ``putenv``)."""
    for name in unset:
        del os.environ[name]
    os.environ.update(changed)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _fd_ceiling() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _limit_text(exc: OSError, held: int) -> str:
    """What failed in the server, and the limit that was hit."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return (
            f"the fork server cannot open more file descriptors ({exc.strerror}): it holds one per worker "
            f"({held} now) and its RLIMIT_NOFILE is {_limit(soft)} (hard limit {_limit(hard)})"
        )
    if exc.errno == errno.EAGAIN:
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        return (
            f"cannot fork another worker ({exc.strerror}) after {held} of this server's workers: a process limit "
            f"was hit: RLIMIT_NPROC is {_limit(soft)} (hard limit {_limit(hard)}); see also "
            f"/proc/sys/kernel/pid_max ({_read_sys('kernel/pid_max')}) and "
            f"/proc/sys/kernel/threads-max ({_read_sys('kernel/threads-max')})"
        )
    if exc.errno == errno.ENOMEM:
        return f"cannot fork another worker after {held} of this server's workers: out of memory ({exc.strerror})"
    return f"cannot start a worker: {exc}"


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _read_sys(name: str) -> str:
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().strip()
    except OSError:
        return "?"


def serve(control_fd: int, output_fd: int, flow_fd: int) -> None:
    """The fork server's main: serve the driver on socket ``control_fd`` until it closes,
    relaying its workers' output on the pipe ``output_fd`` as the pipe ``flow_fd`` allows."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:  # a server holds one descriptor per worker: take what the hard limit allows, as servers do
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    preload_worker_modules()  # imported once here, not by each worker at its first call
    gc.freeze()  # what is imported stays put: children do not copy its pages to collect it
    _Server(socket.socket(fileno=control_fd), output_fd, flow_fd).run()


# --- the driver's side -----------------------------------------------------------------


def interpreter_settings(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables read at interpreter start-up: a fork server serves one set of them."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith("PYTHON")))


class ForkedWorker(NamedTuple):
    """A worker the fork server started: its pid, its output, the driver's end of its link."""

    ospid: int
    output: WorkerOutput
    link: socket.socket


class ForkServer:
    """The driver's handle on one fork server."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess  # the driver's side only: the server itself starts without it

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        output_r, output_w = os.pipe()
        flow_r, flow_w = os.pipe()
        self._socket = mine
        self._flow = flow_w
        self._flow_lock = threading.Lock()
        self._lock = threading.Lock()
        self._outputs: dict[int, WorkerOutput] = {}
        self._outputs_lock = threading.Lock()
        self._retired = False
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"from clustercore_local.forkserver import serve; serve({theirs.fileno()}, {output_w}, {flow_r})",
                ],
                pass_fds=[theirs.fileno(), output_w, flow_r],
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            mine.close()
            os.close(output_r)
            os.close(flow_w)
            raise
        finally:
            theirs.close()
            os.close(output_w)
            os.close(flow_r)
        self._relay = threading.Thread(
            target=self._relay_output, args=(output_r,), name="clustercore-forkserver-output", daemon=True
        )
        self._relay.start()

    def alive(self) -> bool:
        return not self._retired and self.process.poll() is None

    def fork_workers(self, request: dict[str, Any], n: int, started: Callable[[ForkedWorker], None]) -> None:
        """Start ``n`` workers, calling ``started`` with each as its answer arrives (the
        server forks them back to back). Raises ``OSError`` naming the limit hit if the
        server could start only some of them: ``started`` has seen those."""
        body = pickle.dumps({**request, "n": n})
        with self._lock:
            self._socket.sendall(_REQUEST.pack(len(body)) + body)  # our only write before every answer is read
            left, answer = n, None
            try:
                while left:
                    left -= 1  # before reading: an answer that fails to read is not waited for again
                    answer = self._read_answer()
                    if isinstance(answer, OSError):
                        break  # the server said why it stopped: nothing more comes
                    started(answer)
            except BaseException:
                self._discard_answers(left)
                raise
        if isinstance(answer, OSError):
            raise answer

    def _read_answer(self) -> ForkedWorker | OSError:
        """A started worker, or why the server stopped the batch."""
        head, fds, truncated = self._recv(_ANSWER.size)
        key, pid, error, text_size = _ANSWER.unpack(head)
        if text_size:
            text, more, _ = self._recv(text_size)
            for fd in fds + more:
                os.close(fd)
            return OSError(error or errno.EAGAIN, text.decode(errors="replace"))
        output = self._claim_output(key)
        if truncated or len(fds) != 1:  # the kernel could not give us the link: we are at our limit
            for fd in fds:
                os.close(fd)
            output.close()
            _kill(pid)
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            raise OSError(
                errno.EMFILE,
                f"the driver cannot take another worker's link: its RLIMIT_NOFILE is {_limit(soft)} "
                f"(hard limit {_limit(hard)})",
            )
        return ForkedWorker(pid, output, socket.socket(fileno=fds[0]))

    def _recv(self, size: int) -> tuple[bytes, list[int], bool]:
        data, fds, truncated = b"", [], False
        while len(data) < size:
            chunk, more, flags, _ = socket.recv_fds(self._socket, size - len(data), 1)
            fds += more
            truncated = truncated or bool(flags & socket.MSG_CTRUNC)
            if not chunk:
                for fd in fds:
                    os.close(fd)
                raise ConnectionError("the clustercore fork server exited")
            data += chunk
        return data, fds, truncated

    def _discard_answers(self, left: int) -> None:
        """The batch was abandoned here: read the rest of it, so the next request starts
        clean, and end the workers nobody will join."""
        try:
            while left:
                left -= 1
                forked = self._read_answer()
                if isinstance(forked, OSError):
                    return
                forked.link.close()
                forked.output.close()
                _kill(forked.ospid)
        except OSError:  # at our limit, or the server is gone
            if left:  # out of step with the server: retire it (it exits at the end of its socket)
                self._retired = True
                self._socket.shutdown(socket.SHUT_RDWR)

    # --- output ---------------------------------------------------------------------------
    # A worker's output stream is made when its answer or its first output record comes,
    # whichever is first (they travel apart), and forgotten once both its answer and its
    # end have come.

    def _claim_output(self, key: int) -> WorkerOutput:
        with self._outputs_lock:
            output = self._outputs.get(key) or self._outputs.setdefault(key, WorkerOutput(key, self._hold))
            output.claimed = True
            if output.ended:
                del self._outputs[key]
            return output

    def _relay_output(self, fd: int) -> None:
        """Hand each record on the output pipe to the worker it came from."""
        with open(fd, "rb") as stream:
            while True:
                head = stream.read(_OUTPUT.size)
                if len(head) < _OUTPUT.size:
                    break
                key, size = _OUTPUT.unpack(head)
                data = stream.read(size) if size else b""
                with self._outputs_lock:
                    output = self._outputs.get(key) or self._outputs.setdefault(key, WorkerOutput(key, self._hold))
                    if not data:
                        output.ended = True
                        if output.claimed:
                            del self._outputs[key]
                if data:
                    output.feed(data)
                else:
                    output.end()
        with self._outputs_lock:  # the server is gone: so is every stream it relayed
            ended, self._outputs = list(self._outputs.values()), {}
        for output in ended:
            output.end()

    def _hold(self, key: int, hold: bool) -> None:
        with self._flow_lock:
            try:
                if self._flow >= 0:
                    os.write(self._flow, _FLOW.pack(key, hold))
            except OSError:
                pass  # the server is gone, and its workers' output with it

    def close(self) -> None:
        self._socket.close()
        with self._flow_lock:
            flow, self._flow = self._flow, -1
        os.close(flow)
        try:
            self.process.wait(5)
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it did not exit in time
            self.process.kill()
            self.process.wait()
        self._relay.join(5)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


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
