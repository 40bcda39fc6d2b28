"""A ``direct-tcpip`` channel dressed as the stream the core reads and writes (``tunnel=True``).

paramiko reports a dead transport with ``EOFError`` or ``SSHException``;
the core expects ``OSError`` from a failed write, so those become
``ConnectionResetError`` naming the host. A closed channel reads as end of stream.
"""

from __future__ import annotations

from typing import Any


class TunnelStream:
    """The driver's link to one worker through the SSH connection to its host."""

    def __init__(self, channel: Any, host: str) -> None:
        self.channel = channel
        self.host = host

    def recv(self, size: int) -> bytes:
        try:
            return bytes(self.channel.recv(size))
        except EOFError:
            return b""

    def sendall(self, data: Any) -> None:
        import paramiko

        try:
            self.channel.sendall(data)
        except (EOFError, paramiko.SSHException) as exc:
            raise ConnectionResetError(f"the SSH tunnel to {self.host} is closed") from exc

    def settimeout(self, seconds: float | None) -> None:
        self.channel.settimeout(seconds)

    def close(self) -> None:
        self.channel.close()
