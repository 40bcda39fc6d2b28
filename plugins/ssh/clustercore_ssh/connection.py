"""The SSH connection to one host, shared by all of that host's channels.

One paramiko ``Transport`` carries every worker session, every port forward
and every short command (``kill``) for a host. Another transport is opened
only when one carries 10 sessions (OpenSSH's default ``MaxSessions``), or
fewer if sshd refuses one sooner. A connection counts the workers using it
and closes itself when the last one is gone.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from .auth import authenticate
from .deadline import Deadline
from .errors import SSHLaunchError
from .hostconfig import HostSettings
from .hostkeys import load_known_hosts, preferred_key_types, verify_host_key

log = logging.getLogger(__name__)
# paramiko logs what its transport threads meet (e.g. "Error reading SSH protocol banner") at
# ERROR; with no handler anywhere Python's last resort would print it on the user's terminal.
# Our SSHLaunchError says what happened; an application that configures logging still gets them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
MAX_SESSIONS = 10  # OpenSSH's default MaxSessions: sessions per connection before we open another


class _Link:
    """One transport and the session channels we opened on it."""

    def __init__(self, transport: Any, via: HostConnection | None) -> None:
        self.transport = transport
        self.via = via  # the jump host's connection, closed with this one
        self.sessions: list[Any] = []
        self.opening = 0  # session opens in flight
        self.capacity = MAX_SESSIONS

    def room(self) -> bool:
        self.sessions = [c for c in self.sessions if not c.closed]
        return self.transport.is_active() and len(self.sessions) + self.opening < self.capacity

    def close(self) -> None:
        self.transport.close()
        if self.via is not None:
            self.via.release()


class HostConnection:
    """SSH to ``settings``' host: sessions (:meth:`open_session`, :meth:`run`) and port forwards."""

    def __init__(self, settings: HostSettings) -> None:
        self.settings = settings
        self.label = settings.label
        self.peer_ip: str | None = None
        self._links: list[_Link] = []
        self._lock = threading.Lock()  # held while a transport opens: abort() does without it
        self._users = 0
        self._closed = False
        self._aborted = False
        self._opening: list[Any] = []  # sockets and transports being opened, for abort()
        self._opening_lock = threading.Lock()

    # --- opening ---------------------------------------------------------------------

    def connect(self, deadline: Deadline) -> None:
        """Open the first transport now (raises :class:`SSHLaunchError` naming the phase)."""
        with self._lock:
            if not any(link.transport.is_active() for link in self._links):
                self._links.append(self._open_link(deadline))

    def _open_link(self, deadline: Deadline) -> _Link:
        import paramiko

        s = self.settings
        sock, via = self._open_socket(deadline)
        transport = paramiko.Transport(sock)
        self._track(transport)
        try:
            transport.use_compression(s.compress)
            known = load_known_hosts(s)
            options = transport.get_security_options()
            options.key_types = preferred_key_types(s, known, options.key_types)
            # ConnectTimeout bounds the banner as it bounds the TCP connect (as in OpenSSH), and
            # the key exchange and authentication too; without it, the launch's deadline does
            bound = self._bound(deadline)
            transport.banner_timeout = transport.handshake_timeout = bound.left()
            try:
                transport.start_client(timeout=bound.left())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SSHLaunchError(self.label, "ssh", self._handshake_failure(transport, exc, bound)) from exc
            if not (transport.is_active() and transport.initial_kex_done):  # start_client's timeout passed
                raise SSHLaunchError(self.label, "ssh", self._handshake_failure(transport, None, bound))
            verify_host_key(s, known, transport.get_remote_server_key())
            authenticate(transport, s, self._bound(deadline))
            transport.set_keepalive(s.keepalive)
            self._check_aborted("ssh")
        except BaseException:
            transport.close()
            if via is not None:
                via.release()
            raise
        finally:
            self._untrack(transport)
        log.debug("connected to %s", self.label)
        return _Link(transport, via)

    def _bound(self, deadline: Deadline) -> Deadline:
        """The deadline of one step of the login: ``ConnectTimeout`` if set, within the launch's."""
        s = self.settings
        if s.connect_timeout is None or s.connect_timeout >= deadline.left():
            return deadline
        return Deadline(s.connect_timeout)

    def _handshake_failure(self, transport: Any, exc: BaseException | None, bound: Deadline) -> str:
        self._check_aborted("ssh")
        by_option = bound.seconds == self.settings.connect_timeout
        within = f"within {bound.seconds:g} s" + (" (ConnectTimeout)" if by_option else "")
        if not transport.remote_version:
            if exc is None or "banner" in str(exc).lower():
                return (
                    f"no SSH banner from port {self.settings.port} {within}: it accepts TCP connections but "
                    "does not speak SSH (a hung sshd, or another service on that port)"
                )
        if exc is None:
            return f"no SSH key exchange {within}"
        return f"SSH handshake failed: {exc or type(exc).__name__}"

    # --- cancelling --------------------------------------------------------------------

    def _track(self, thing: Any) -> None:
        with self._opening_lock:
            self._opening.append(thing)
            aborted = self._aborted
        if aborted:
            _close_quietly(thing)

    def _untrack(self, thing: Any) -> None:
        with self._opening_lock:
            if thing in self._opening:
                self._opening.remove(thing)

    def _check_aborted(self, phase: str) -> None:
        if self._aborted:
            raise SSHLaunchError(self.label, phase, "the launch was cancelled")

    def abort(self) -> None:
        """Close everything at once, from any thread, even while another opens a transport
        (holding the lock): a connect, banner, key exchange, login, session or probe
        blocked on this connection fails within moments. For a cancelled launch."""
        with self._opening_lock:
            self._aborted = True
            opening = list(self._opening)
        for thing in opening:
            _close_quietly(thing)
        for link in list(self._links):
            link.transport.close()

    def _open_socket(self, deadline: Deadline) -> tuple[Any, HostConnection | None]:
        s = self.settings
        timeout = min(deadline.left(), s.connect_timeout or deadline.left())
        if s.jump is not None:
            via = HostConnection(s.jump)
            via.acquire()
            self._track(via)  # a cancel aborts the jump host's login too
            try:
                via.connect(deadline)
                return via.forward(s.hostname, s.port, deadline, phase="connect"), via
            except SSHLaunchError as exc:
                via.release()
                self._check_aborted("connect")
                if exc.host == self.label:
                    raise
                raise SSHLaunchError(self.label, "connect", f"through ProxyJump {exc}") from exc
            finally:
                self._untrack(via)
        if s.proxy_command is not None:
            import paramiko

            try:
                return paramiko.ProxyCommand(s.proxy_command), None
            except (paramiko.SSHException, OSError) as exc:
                raise SSHLaunchError(self.label, "connect", f"ProxyCommand {s.proxy_command!r}: {exc}") from exc
        try:
            sock = self._connect_tcp(s.hostname, s.port, timeout)
        except SSHLaunchError:
            raise
        except socket.gaierror as exc:
            raise SSHLaunchError(self.label, "connect", f"cannot resolve {s.hostname!r}: {exc}") from exc
        except TimeoutError as exc:
            raise SSHLaunchError(self.label, "connect", f"no answer from port {s.port} within {timeout:.3g} s") from exc
        except OSError as exc:
            self._check_aborted("connect")
            raise SSHLaunchError(self.label, "connect", f"cannot reach port {s.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer_ip = sock.getpeername()[0]
        return sock, None

    def _connect_tcp(self, host: str, port: int, timeout: float) -> socket.socket:
        """``socket.create_connection``, with each attempt's socket where :meth:`abort` finds it."""
        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            self._track(sock)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                self._check_aborted("connect")
                return sock
            except BaseException as exc:
                sock.close()
                if not isinstance(exc, OSError) or isinstance(exc, SSHLaunchError):
                    raise
                error = exc
                if isinstance(exc, TimeoutError):
                    break
            finally:
                self._untrack(sock)
        raise error if error is not None else OSError(f"no address for {host!r}")

    # --- channels --------------------------------------------------------------------

    def open_session(self, deadline: Deadline) -> Any:
        """A new session channel, on a transport that has room for it."""
        import paramiko

        while True:
            with self._lock:
                if self._closed or self._aborted:
                    raise SSHLaunchError(self.label, "session", "the connection was closed")
                link = next((x for x in self._links if x.room()), None)
                if link is None:
                    link = self._open_link(deadline)
                    self._links.append(link)
                link.opening += 1
            try:
                channel = link.transport.open_session(timeout=deadline.left())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                # a refusal on a live transport is sshd's MaxSessions (paramiko may report it as a
                # plain SSHException when several opens fail at once)
                with self._lock:
                    link.opening -= 1
                    # sessions open, and those other threads are opening right now, both count
                    in_use = len([c for c in link.sessions if not c.closed]) + link.opening
                    if not link.transport.is_active() or not in_use or deadline.expired():
                        raise SSHLaunchError(self.label, "session", f"cannot open a session: {exc}") from exc
                    link.capacity = min(link.capacity, in_use)
                log.debug("%s: sshd allows %d sessions per connection", self.label, link.capacity)
                continue
            with self._lock:
                link.opening -= 1
                link.sessions.append(channel)
            return channel

    def run(self, command: str, deadline: Deadline) -> tuple[int, str]:
        """Run a short command; returns ``(exit status, stdout+stderr)`` (-1 if it did not end in time)."""
        channel = self.open_session(deadline)
        try:
            channel.set_combine_stderr(True)
            channel.settimeout(deadline.left())
            channel.exec_command(command)
            channel.shutdown_write()
            chunks = []
            try:
                while data := channel.recv(65536):
                    chunks.append(data)
            except TimeoutError:
                pass
            status = channel.recv_exit_status() if channel.status_event.wait(deadline.left()) else -1
            return status, b"".join(chunks).decode(errors="replace")
        finally:
            channel.close()

    def forward(self, host: str, port: int, deadline: Deadline, phase: str = "worker connect") -> Any:
        """A ``direct-tcpip`` channel: the SSH server dials ``host:port`` for us."""
        import paramiko

        with self._lock:
            link = next((x for x in self._links if x.transport.is_active()), None)
        if link is None:
            raise SSHLaunchError(self.label, phase, "the SSH connection is closed")
        try:
            return link.transport.open_channel(
                "direct-tcpip", dest_addr=(host, port), src_addr=("127.0.0.1", 0), timeout=deadline.left()
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHLaunchError(self.label, phase, f"the server could not forward to {host}:{port}: {exc}") from exc

    # --- lifetime --------------------------------------------------------------------

    @property
    def active(self) -> bool:
        with self._lock:
            return any(link.transport.is_active() for link in self._links)

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self) -> bool:
        """One user more; False if the connection is already closed."""
        with self._lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        """One user fewer; the last one closes the connection."""
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._closed:
                return
            self._closed = True
            links, self._links = self._links, []
        for link in links:
            link.close()

    def close(self) -> None:
        """Close every transport now (the remote sessions end, and with them the workers)."""
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
        for link in links:
            link.close()


def _close_quietly(thing: Any) -> None:
    """Close a socket being connected (``shutdown`` aborts a blocked ``connect``), a transport,
    or a jump host's connection being opened (aborted, like this one)."""
    if isinstance(thing, HostConnection):
        thing.abort()
        return
    try:
        if isinstance(thing, socket.socket):
            thing.shutdown(socket.SHUT_RDWR)
        thing.close()
    except OSError:
        pass
