"""The one exception of the SSH plugin.

``SSHLaunchError(ConnectionError)`` names the host, the phase that failed and,
when the remote side said something, its captured output. Phases, in order::

    connect      TCP connection (or ProxyJump / ProxyCommand) to the SSH server
    ssh          the SSH protocol handshake
    host key     the server's key is unknown or does not match known_hosts
    auth         no key was accepted
    session      opening a channel / running the remote command
    dir          the workers' ``dir`` does not exist there (or cannot be entered): the shell's words
    python       the remote Python could not be run (exename)
    import       clustercore cannot be imported by the remote Python
    version      the remote Python or clustercore protocol differs from the driver's
    worker start the worker did not print its address in time, or exited first
    kill         the remote process could not be signalled

Bad arguments raise ``ValueError``/``TypeError`` when the manager is built.
"""

from __future__ import annotations

MAX_OUTPUT = 4000


class SSHLaunchError(ConnectionError):
    """Starting a worker on ``host`` failed in ``phase``; ``output`` is what the remote side printed."""

    def __init__(self, host: str, phase: str, detail: str, output: str = "") -> None:
        self.host, self.phase, self.detail = host, phase, detail
        self.output = output[-MAX_OUTPUT:]
        text = f"ssh {host} failed in phase {phase!r}: {detail}"
        if self.output.strip():
            text += "\n--- remote output (stdout+stderr) ---\n" + self.output.rstrip()
        super().__init__(text)

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        return (type(self), (self.host, self.phase, self.detail, self.output))
