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
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

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
        try:
            transport.use_compression(s.compress)
            known = load_known_hosts(s)
            options = transport.get_security_options()
            options.key_types = preferred_key_types(s, known, options.key_types)
            transport.banner_timeout = transport.handshake_timeout = deadline.left()
            try:
                transport.start_client(timeout=deadline.left())
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SSHLaunchError(self.label, "ssh", f"SSH handshake failed: {exc or type(exc).__name__}") from exc
            if not (transport.is_active() and transport.initial_kex_done):  # start_client's timeout passed
                raise SSHLaunchError(self.label, "ssh", f"no SSH handshake within {deadline.seconds:g} s")
            verify_host_key(s, known, transport.get_remote_server_key())
            transport.auth_timeout = deadline.left()
            authenticate(transport, s)
            transport.set_keepalive(s.keepalive)
        except BaseException:
            transport.close()
            if via is not None:
                via.release()
            raise
        log.debug("connected to %s", self.label)
        return _Link(transport, via)

    def _open_socket(self, deadline: Deadline) -> tuple[Any, HostConnection | None]:
        s = self.settings
        timeout = min(deadline.left(), s.connect_timeout or deadline.left())
        if s.jump is not None:
            via = HostConnection(s.jump)
            via.acquire()
            try:
                via.connect(deadline)
                return via.forward(s.hostname, s.port, deadline, phase="connect"), via
            except SSHLaunchError as exc:
                via.release()
                if exc.host == self.label:
                    raise
                raise SSHLaunchError(self.label, "connect", f"through ProxyJump {exc}") from exc
        if s.proxy_command is not None:
            import paramiko

            try:
                return paramiko.ProxyCommand(s.proxy_command), None
            except (paramiko.SSHException, OSError) as exc:
                raise SSHLaunchError(self.label, "connect", f"ProxyCommand {s.proxy_command!r}: {exc}") from exc
        try:
            sock = socket.create_connection((s.hostname, s.port), timeout=timeout)
        except socket.gaierror as exc:
            raise SSHLaunchError(self.label, "connect", f"cannot resolve {s.hostname!r}: {exc}") from exc
        except TimeoutError as exc:
            raise SSHLaunchError(self.label, "connect", f"no answer from port {s.port} within {timeout:.3g} s") from exc
        except OSError as exc:
            raise SSHLaunchError(self.label, "connect", f"cannot reach port {s.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer_ip = sock.getpeername()[0]
        return sock, None

    # --- channels --------------------------------------------------------------------

    def open_session(self, deadline: Deadline) -> Any:
        """A new session channel, on a transport that has room for it."""
        import paramiko

        while True:
            with self._lock:
                if self._closed:
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
