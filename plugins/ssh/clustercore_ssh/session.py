"""One remote worker process and the SSH session channel that runs it.

The worker runs with ``--lifeline``: its stdin is the channel, so when the
channel closes (we close it, or the SSH connection drops and sshd closes the
session) the worker reads end-of-file and exits. A channel without a PTY gives
no signal to its command, so this is what ties the worker's life to ours.
:meth:`WorkerSession.stop` climbs the rest of the ladder if that is not
enough: end of stdin, then ``kill -TERM``, then ``kill -KILL`` over a new
session channel, each only while the worker's exit status has not arrived.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .connection import HostConnection
from .deadline import Deadline
from .errors import SSHLaunchError
from .remote_command import dir_failure, parse_pid_line

log = logging.getLogger(__name__)
EOF_GRACE = 3.0
SIGNAL_GRACE = 3.0


class WorkerSession:
    """A started worker: ``stdout`` (its output, stderr merged), ``ospid`` (its remote pid)."""

    def __init__(self, connection: HostConnection, channel: Any, stdout: Any, ospid: int, early: list[str]) -> None:
        self.connection = connection
        self.channel = channel
        self.stdout = stdout
        self.ospid = ospid
        self.early_output = early
        self.deadline: Deadline | None = None  # from the session's start: bounds connecting to the worker
        self._released = False
        self._lock = threading.Lock()
        connection.acquire()

    @property
    def host(self) -> str:
        return self.connection.label

    @classmethod
    def start(cls, connection: HostConnection, command: str, cookie: str, deadline: Deadline) -> WorkerSession:
        """Run ``command`` (see :mod:`.remote_command`), hand it the cookie, wait for its pid line."""
        import paramiko

        channel = connection.open_session(deadline)
        early: list[str] = []
        try:
            channel.set_combine_stderr(True)
            channel.settimeout(deadline.left())
            channel.exec_command(command)
            channel.sendall((cookie + "\n").encode())
            stdout = channel.makefile("rb")
            while True:
                raw = stdout.readline()
                if not raw:
                    status = channel.recv_exit_status() if channel.status_event.wait(deadline.left()) else None
                    cd_error = dir_failure("".join(early))
                    if cd_error is not None:
                        raise SSHLaunchError(
                            connection.label, "dir", f"cannot change to the workers' dir: {cd_error}", "".join(early)
                        )
                    raise SSHLaunchError(
                        connection.label,
                        "session",
                        f"the remote shell exited with status {status} before starting the worker",
                        "".join(early),
                    )
                line = raw.decode(errors="replace")
                ospid = parse_pid_line(line)
                if ospid is not None:
                    break
                early.append(line)
            channel.settimeout(None)
        except SSHLaunchError:
            channel.close()
            raise
        except TimeoutError as exc:
            channel.close()
            raise SSHLaunchError(
                connection.label,
                "session",
                f"the remote shell did not start within {deadline.seconds:g} s",
                "".join(early),
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            raise SSHLaunchError(connection.label, "session", f"cannot run the worker command: {exc}") from exc
        return cls(connection, channel, stdout, ospid, early)

    # --- state -----------------------------------------------------------------------

    def exit_status(self) -> int | None:
        """The worker's exit status once it has exited (and sshd has told us), else ``None``."""
        return self.channel.recv_exit_status() if self.channel.exit_status_ready() else None

    def wait(self, timeout: float) -> bool:
        """True once the worker's exit status arrived, or its channel is gone."""
        return bool(self.channel.status_event.wait(timeout)) or self.channel.closed

    # --- ending it ---------------------------------------------------------------------

    def signal(self, name: str, timeout: float = SIGNAL_GRACE) -> bool:
        """Send ``kill -NAME`` to the worker over a new channel; False if it could not be sent."""
        if self.exit_status() is not None or not self.connection.active:
            return False
        try:
            status, output = self.connection.run(f"kill -{name} {self.ospid}", Deadline(timeout))
        except SSHLaunchError as exc:
            log.warning("could not signal worker pid %d on %s: %s", self.ospid, self.host, exc)
            return False
        if status != 0:
            log.debug("kill -%s %d on %s: status %d %s", name, self.ospid, self.host, status, output.strip())
        return status == 0

    def stop(self, grace: float) -> None:
        """Wait ``grace`` s for the worker to exit, then end it: EOF, TERM, KILL. Idempotent."""
        if not self.wait(grace) and self.connection.active:
            try:
                self.channel.shutdown_write()
            except OSError:
                pass
            if not self.wait(EOF_GRACE):
                for name in ("TERM", "KILL"):
                    log.info("worker pid %d on %s did not exit: sending SIG%s", self.ospid, self.host, name)
                    if self.signal(name) and self.wait(SIGNAL_GRACE):
                        break
        self.close()

    def kill(self) -> None:
        """End the worker at once (the core calls this for a worker that never joined)."""
        self.stop(grace=0)

    def close(self) -> None:
        """Close the channel (the worker's lifeline) and let go of the connection."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.channel.close()
        self.connection.release()
