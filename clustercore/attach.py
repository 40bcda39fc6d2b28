"""Attaching to a running driver from another process of the same user, as a debugger
would: what ``clustercore top`` uses.

A driver that has added workers is attachable (made so at its first ``addprocs``;
``CLUSTERCORE_ATTACH=0`` (or false, no, off) or ``allow_attach(False)`` says no; :func:`allow_attach`
makes a driver attachable before it has workers). It listens on a Unix socket and
writes an *attach file* beside it, both in a directory only its user can enter::

    $XDG_RUNTIME_DIR/clustercore/        (else /tmp/clustercore-<uid>/)   mode 0700, owned by the user
        driver-<ospid>-<tag>.json   mode 0600: {"ospid", "socket", "key", "argv", "started"}
        driver-<ospid>-<tag>.sock   the socket

``key`` is this driver's attach key, made for the socket alone (not the cluster cookie:
holding the file lets a process ask for the views below, nothing else). An attaching
process reads the file (so it must be the driver's user, or root), dials the socket
and runs the cluster's own handshake through :mod:`clustercore.links.establish` with
that key: the peer's uid is checked (``SO_PEERCRED``) before a byte is read, then both
ends prove they hold the key, the attacher as pid ``ATTACHER`` (never a member's pid).
Then it sends requests, each a frame of JSON naming one of ``REQUEST_NAMES`` with its
keyword arguments (plain values: the driver never unpickles what an attacher sends, so
a request can only run what :func:`_requests` names), and reads one reply frame per request
(pickled by the driver: the attacher trusts the driver whose file it read).

The driver holds an exclusive ``flock`` on its attach file while it runs (taken before
the file appears under its name), and removes both when it exits. A reader that finds
a file whose lock is free removes that file and its socket: the driver died without
cleaning up (``SIGKILL``). A lock held means the driver runs, whatever its pid looks
like from the reader (a reader in another pid namespace, a container sharing ``/tmp``,
does not see it): the kernel lets the lock go with the last descriptor of the file, and
a child forked from the driver closes its copy at once (``os.register_at_fork``), so no
process but the driver holds it. ``<tag>`` is random, so a later driver given the same
pid never has a name a reader is removing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import pickle
import re
import select
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine.cluster import PGRP, env_switch
from .engine.messages import MsgType
from .errors import HandshakeError
from .links import establish
from .logs import LazyLogger
from .wire.framing import FLAG_ERROR, NO_REF, FrameReader, encode_frame
from .wire.transport import SocketTransport, Transport

if TYPE_CHECKING:
    from .clusterstatus import CallInFlight, WorkerStatus

log = LazyLogger(__name__)
ATTACHER = 0xFFFFFFFF  # the pid an attaching process proves it dials as
ATTACH_ENV = "CLUSTERCORE_ATTACH"  # off (0, false, no, off): addprocs and `clustercore` make no attach socket
_REQUEST, _REPLY = MsgType.CALL_FETCH, MsgType.RESULT  # frame types, as on a cluster link
_MAX_CLIENTS = 8  # attached processes served at once; more are closed at once
_REQUESTS_AT_ONCE = 2 * _MAX_CLIENTS  # requests running (those of attachers that left, until their deadline)
REQUEST_SECONDS = 30.0  # a request's own ``timeout`` is cut to this: an attacher cannot hold a thread longer
_CLOSE_SECONDS = 5.0  # allow_attach(False) waits this long at most for the accept and session threads to end
REQUEST_NAMES = ("status", "calls_in_flight", "info")


def _requests() -> dict[str, Callable[..., Any]]:
    """What each of ``REQUEST_NAMES`` runs. ``status`` and ``calls_in_flight`` load with the
    first request: a driver made attachable by ``addprocs`` pays for them only once
    something attaches."""
    from . import clusterstatus

    return {"status": clusterstatus.status, "calls_in_flight": clusterstatus.calls_in_flight, "info": _info}


def _info() -> dict[str, Any]:
    return {"ospid": os.getpid(), "argv": sys.argv, "workers": len(PGRP.workers)}


SHARED_DIR = "/tmp/clustercore-{uid}"  # where a driver without a private XDG_RUNTIME_DIR publishes


def attach_dir(create: bool = False) -> Path:
    """The directory this driver puts its attach file in: ``$XDG_RUNTIME_DIR/clustercore``
    if that runtime directory is this user's and private, else ``SHARED_DIR``; made (mode
    0700) with ``create``. A directory that another user owns, or that others may enter, is
    refused (``PermissionError``)."""
    path = _runtime_dir() or Path(SHARED_DIR.format(uid=os.getuid()))
    if create:
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
    if path.exists() and not _owned_private(path):
        raise PermissionError(f"{path} is not a directory of this user's that only it may enter: not used")
    return path


def attach_dirs() -> list[Path]:
    """Where a reader looks for drivers: ``$XDG_RUNTIME_DIR/clustercore`` (if that runtime
    directory is this user's and private) and ``SHARED_DIR``, both. A driver picks one by
    its own environment, and a reader's may differ: a batch job has no ``XDG_RUNTIME_DIR``
    (its driver publishes in ``SHARED_DIR``), a login shell on its node has one."""
    runtime = _runtime_dir()
    shared = Path(SHARED_DIR.format(uid=os.getuid()))
    return [runtime, shared] if runtime is not None and runtime != shared else [shared]


def _runtime_dir() -> Path | None:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    return Path(runtime) / "clustercore" if runtime and _owned_private(Path(runtime)) else None


def _owned_private(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


# --- the driver's side ---------------------------------------------------------------------------


class _Server:
    """The attach socket and file of this driver, and the thread that accepts on it."""

    def __init__(self) -> None:
        directory = attach_dir(create=True)
        self.owner = os.getpid()
        self.key = os.urandom(32).hex()  # for the attach socket alone: never the cluster cookie
        name = f"driver-{os.getpid()}-{os.urandom(6).hex()}"
        self.file = directory / f"{name}.json"
        self.socket_path = directory / f"{name}.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lock_fd = -1
        try:
            self.listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o600)
            self.listener.listen(_MAX_CLIENTS)
            self.lock_fd = _publish(directory, name, self._record())
        except BaseException:
            self._remove()
            raise
        self.clients = threading.BoundedSemaphore(_MAX_CLIENTS)
        self.running = threading.BoundedSemaphore(_REQUESTS_AT_ONCE)
        self.sessions: dict[socket.socket, threading.Thread] = {}  # attached processes, and their threads
        self.sessions_lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept_forever, name="clustercore-attach", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _record(self) -> dict[str, Any]:
        return {
            "ospid": os.getpid(),
            "socket": str(self.socket_path),
            "key": self.key,
            "argv": sys.argv,
            "started": time.time(),
        }

    def _accept_forever(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # shut down by close()
            if not self.clients.acquire(blocking=False):
                sock.close()  # enough attached already
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), name="clustercore-attached", daemon=True)
            with self.sessions_lock:
                if self.closed:  # accepted as close() ran: not served
                    sock.close()
                    self.clients.release()
                    return
                self.sessions[sock] = thread
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        transport: Transport = SocketTransport(sock)
        try:
            transport, peer = establish.accept(transport, self.key, None, me=1)
            if peer != ATTACHER:
                raise HandshakeError(f"pid {peer} dialed the attach socket, which takes attaching processes only")
            reader = FrameReader(transport)
            while True:
                frame = reader.read_frame()
                if frame is None or frame.msg_type != _REQUEST:
                    return
                try:
                    name, kwargs = _request(frame.payload)
                    answer = self._answer(sock, name, kwargs)
                except Exception as exc:  # noqa: BLE001 - the attacher sees it
                    answer = exc, FLAG_ERROR
                if answer is None:
                    return  # the attacher left (or close() ended the session) before its answer
                value, flags = answer
                transport.send_all(encode_frame(_REPLY, pickle.dumps(value, protocol=5), [], NO_REF, NO_REF, flags))
        except (OSError, EOFError, HandshakeError) as exc:
            log.debug("an attached process left: %s", exc)
        finally:
            with self.sessions_lock:
                self.sessions.pop(sock, None)
            transport.close()
            self.clients.release()

    def _answer(self, sock: socket.socket, name: str, kwargs: dict[str, Any]) -> tuple[Any, int] | None:
        """Run request ``name`` on a thread of its own, its ``timeout`` cut to ``REQUEST_SECONDS``;
        its ``(value, flags)``, or ``None`` as soon as the attacher hangs up: a departed attacher
        frees its session at once, and its request ends by its deadline, answering no one. An
        attacher sends nothing while it waits, so anything readable on ``sock`` means it left."""
        asked = kwargs.get("timeout")
        if isinstance(asked, (int, float)) and not asked <= REQUEST_SECONDS:  # NaN and infinity too
            kwargs = {**kwargs, "timeout": REQUEST_SECONDS}
        if not self.running.acquire(blocking=False):
            raise RuntimeError(f"the driver is running {_REQUESTS_AT_ONCE} attach requests already; ask again later")
        answered, told = os.pipe()
        outcome: list[tuple[Any, int]] = []

        def run() -> None:
            try:
                outcome.append((_requests()[name](**kwargs), 0))
            except Exception as exc:  # noqa: BLE001 - the attacher sees it
                outcome.append((exc, FLAG_ERROR))
            finally:
                self.running.release()
                with contextlib.suppress(OSError):  # the session has gone: nobody reads
                    os.write(told, b"!")
                os.close(told)

        try:
            poller = select.poll()
            poller.register(answered, select.POLLIN)
            poller.register(sock, select.POLLIN | select.POLLRDHUP)
            threading.Thread(target=run, name="clustercore-attach-request", daemon=True).start()
        except BaseException:
            self.running.release()
            os.close(told)
            os.close(answered)
            raise
        try:
            ready = {fd for fd, _ in poller.poll()}
        finally:
            os.close(answered)
        return outcome[0] if answered in ready and outcome else None

    def close(self) -> None:
        """Not attachable from now on: the socket and file go, every attached process is cut
        off, and the accept and session threads end (waited for ``_CLOSE_SECONDS`` at most;
        a request already running ends by its own deadline, answering no one)."""
        if os.getpid() != self.owner:
            return  # a forked child exiting: the files are its parent's
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which close() alone does not
        self._remove()
        with self.sessions_lock:  # a session's socket leaves this dict before it is closed
            self.closed = True
            sessions = dict(self.sessions)
            for sock in sessions:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # its thread's read or wait returns
        deadline = time.monotonic() + _CLOSE_SECONDS
        for thread in (self.thread, *sessions.values()):
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def forget_in_child(self) -> None:
        """In a child forked from the driver: close the copies of the listener and the lock's
        descriptor (the parent's lock stays held, by the parent alone): a lock held means the
        driver runs, not a child of a driver that is gone."""
        self.owner = -1
        self.listener.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1
        for sock in list(self.sessions):
            sock.close()

    def _remove(self) -> None:
        self.listener.close()
        for path in (self.file, self.socket_path):
            path.unlink(missing_ok=True)
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # after the unlink: no reader takes a file being removed for stale
            self.lock_fd = -1


def _publish(directory: Path, name: str, record: dict[str, Any]) -> int:
    """Write ``record`` as ``name.json`` in ``directory``, locked (``flock``, exclusive) before
    it appears under that name; returns the descriptor that holds the lock."""
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(record).encode())
        os.rename(temporary, directory / f"{name}.json")
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    return fd


_server: list[_Server] = []
_server_lock = threading.Lock()
_refused = [False]  # allow_attach(False) was called: addprocs makes no server


_forks_watched = [False]


def _forget_in_child() -> None:
    for server in list(_server):  # not under _server_lock: another thread may have held it at the fork
        server.forget_in_child()


def _new_server() -> _Server:
    """A server for this driver (under ``_server_lock``); a child forked from now on forgets it."""
    if not _forks_watched[0]:
        os.register_at_fork(after_in_child=_forget_in_child)
        _forks_watched[0] = True
    return _Server()


def allow_attach(allow: bool = True) -> str:
    """Let ``clustercore top`` (any process of this user holding the attach file) attach to
    this driver from now on; returns the attach file's path. Idempotent; pid 1 only. A
    driver is made attachable at its first ``addprocs`` anyway (unless ``CLUSTERCORE_ATTACH=0``):
    this is for one that has no workers yet. ``allow_attach(False)``: not attachable
    from now on (the socket and file are removed, and ``addprocs`` makes none); returns ``""``."""
    if PGRP.myid != 1:
        raise RuntimeError(f"only the driver (pid 1) can be attached to; this is pid {PGRP.myid}")
    with _server_lock:
        _refused[0] = not allow
        if not allow:
            for server in _server:
                server.close()
            _server.clear()
            return ""
        if not _server:
            _server.append(_new_server())
        return str(_server[0].file)


def attach_by_default() -> None:
    """Make this driver attachable unless ``CLUSTERCORE_ATTACH`` is off (``0``, ``false``,
    ``no``, ``off``) or ``allow_attach(False)`` said no: ``addprocs`` calls this before each
    launch (the first makes the socket). A value of ``CLUSTERCORE_ATTACH`` that is neither on
    nor off is a ``ValueError``, as ``CLUSTERCORE_TLS``'s is. A failure to make the socket (no
    private directory to use, say) is logged, never raised: the workers matter more than the view."""
    if PGRP.myid != 1:
        return
    with _server_lock:
        if _refused[0] or _server:
            return
        if not env_switch(ATTACH_ENV, default=True):
            return
        try:
            _server.append(_new_server())
        except Exception as exc:  # noqa: BLE001 - said, and addprocs goes on
            log.warning("clustercore top cannot attach to this driver: %s", exc)


# --- the attaching side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    """A driver found through its attach file."""

    ospid: int
    socket: str
    key: str  #: the driver's attach key (not its cluster cookie)
    argv: list[str]
    started: float
    file: str


def drivers() -> list[Driver]:
    """The attachable drivers of this user that are running, oldest first, from every one of
    :func:`attach_dirs` that is this user's and private (the others are passed over: see
    :func:`attach`); the files of drivers that are not running (their lock is free) are
    removed, with their sockets."""
    return _look()[0]


def _look() -> tuple[list[Driver], list[str]]:
    """The running drivers, oldest first, and why a directory was not looked in."""
    found: list[Driver] = []
    passed_over: list[str] = []
    for directory in attach_dirs():
        try:
            found += _drivers_in(directory)
        except PermissionError as exc:
            passed_over.append(str(exc))
    return sorted(found, key=lambda d: d.started), passed_over


def _drivers_in(directory: Path) -> list[Driver]:
    """The running drivers whose files are in ``directory``; stale files there are removed.

    The directory is opened once, checked through that descriptor (this user's, no one
    else may enter: another user cannot put a directory of theirs there between a check
    and a use) and read through it; a file's socket is the one named after the file, in
    the same directory, never a path the file gives."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return []  # none yet (or not a directory): no driver has made itself attachable there
    try:
        st = os.fstat(dir_fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(
                f"{directory} is not a directory of this user's that only it may enter: not looked in"
            )
        found = []
        for name in sorted(os.listdir(dir_fd)):
            unfinished = _UNFINISHED.fullmatch(name)
            if unfinished is not None:
                if _lock_free(name, dir_fd) and not _alive(int(unfinished[1])):
                    with contextlib.suppress(OSError):  # a driver killed as it wrote its file
                        os.unlink(name, dir_fd=dir_fd)
                continue  # else being written (its lock is taken just after it is made)
            match = _ATTACH_FILE.fullmatch(name)
            if match is None:
                continue
            ospid, socket_name = int(match["ospid"]), f"{match['stem']}.sock"
            record = _read_live_record(name, dir_fd)
            if record is _STALE:
                for stale in (name, socket_name):
                    with contextlib.suppress(OSError):
                        os.unlink(stale, dir_fd=dir_fd)
                continue
            if not isinstance(record, dict):
                continue
            try:
                driver = Driver(
                    ospid,
                    str(directory / socket_name),
                    str(record["key"]),
                    [str(a) for a in record["argv"]],
                    float(record["started"]),
                    str(directory / name),
                )
            except (ValueError, KeyError, TypeError):
                continue
            found.append(driver)
    finally:
        os.close(dir_fd)
    return found


_ATTACH_FILE = re.compile(r"(?P<stem>driver-(?P<ospid>[0-9]{1,10})-[0-9a-f]{12})\.json")
_UNFINISHED = re.compile(r"\.driver-([0-9]{1,10})-[0-9a-f]{12}\.tmp")
_STALE = object()
_ATTACH_FILE_MAX = 1 << 20


def _read_live_record(name: str, dir_fd: int) -> object:
    """The JSON object in attach file ``name`` if it is a regular file of this user's whose
    driver runs (its lock is held: only the driver holds it, see the module's docstring);
    ``_STALE`` if its driver is gone (the lock is free); ``None`` if it is not one to read.
    The driver's pid is not asked: from another pid namespace a live driver's is not seen."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > _ATTACH_FILE_MAX:
            return None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # its driver holds it: live
        else:
            return _STALE  # nobody does: the driver is gone (its pid may be another process's now)
        try:
            record = json.load(f)
        except (OSError, ValueError):
            return None
    return record if isinstance(record, dict) else None


def _lock_free(name: str, dir_fd: int) -> bool:
    """Whether nobody holds the lock of file ``name`` (``False`` if it cannot be opened)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _request(payload: Any) -> tuple[str, dict[str, Any]]:
    """A request frame's ``(name, keyword arguments)``: JSON, never a pickle."""
    request = json.loads(bytes(payload))
    known = isinstance(request, list) and len(request) == 2 and request[0] in REQUEST_NAMES
    if not (known and isinstance(request[1], dict)):
        raise ValueError(f"not a request: {request!r:.200}; known: {', '.join(REQUEST_NAMES)}")
    return request[0], request[1]


def _printable(text: str) -> str:
    """``text`` with anything a terminal would act on (escape sequences) replaced."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _alive(ospid: int) -> bool:
    try:
        os.kill(ospid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Attached:
    """A link to a running driver: ask it for ``status()`` and ``calls_in_flight()``."""

    def __init__(self, driver: Driver, timeout: float = 10.0) -> None:
        self.driver = driver
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(driver.socket)
        except OSError:
            sock.close()
            raise
        transport = SocketTransport(sock)
        try:
            self._transport = establish.dial(transport, driver.key, None, me=ATTACHER, target=1, deadline=timeout)
        except BaseException:
            transport.close()
            raise
        self._reader = FrameReader(self._transport)
        self._lock = threading.Lock()
        self._timeout = timeout

    def request(self, name: str, **kwargs: Any) -> Any:
        """Run request ``name`` on the driver; its value, or its exception raised here. The
        driver has the request's own ``timeout`` (if it takes one) and the link's to answer."""
        with self._lock:
            asked = kwargs.get("timeout")
            wait = self._timeout + (asked if isinstance(asked, (int, float)) and asked > 0 else 0.0)
            self._transport.set_timeout(wait)
            self._transport.send_all(encode_frame(_REQUEST, json.dumps([name, kwargs]).encode()))
            frame = self._reader.read_frame()
            if frame is None:
                raise ConnectionError(f"the driver (os pid {self.driver.ospid}) closed the attach link")
            value = pickle.loads(frame.payload)
        if frame.flags & FLAG_ERROR:
            raise value
        return value

    def status(self, timeout: float = 2.0) -> list[WorkerStatus]:
        return self.request("status", timeout=timeout)  # type: ignore[no-any-return]

    def calls_in_flight(self, pid: int, timeout: float = 5.0) -> list[CallInFlight]:
        return self.request("calls_in_flight", pid=pid, timeout=timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Attached:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach(ospid: int | None = None, timeout: float = 10.0) -> Attached:
    """Attach to this user's running driver with os pid ``ospid`` (default: the only one).
    ``LookupError`` says which drivers there are when that is not one."""
    running, passed_over = _look()
    found = running if ospid is None else [d for d in running if d.ospid == ospid]
    if len(found) != 1:
        listed = ", ".join(f"{d.ospid} ({_printable(' '.join(d.argv))[:60]})" for d in running) or "none"
        what = f"no attachable driver with os pid {ospid}" if ospid is not None else "not one attachable driver"
        looked = " or ".join(str(d) for d in attach_dirs())
        unused = "".join(f"; {_printable(why)}" for why in passed_over)
        raise LookupError(
            f"{what} in {looked}; running: {listed} (a driver is attachable once it has added workers, "
            f"unless {ATTACH_ENV}=0; before that, once it calls clustercore.allow_attach()){unused}"
        )
    return Attached(found[0], timeout)
