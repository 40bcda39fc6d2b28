"""Exceptions raised by clustercore.

Exception tree::

    Exception
     +-- RemoteException            a call failed on another process (``.pid``, ``.captured``)
     +-- ProcessExitedException     the worker died or was removed
     +-- RuntimeError (builtin)
          +-- InvalidStateError     e.g. a put on, or a take from an empty, closed channel
     +-- ConnectionError (builtin)
          +-- HandshakeError        a peer failed the connection handshake
               +-- AuthenticationError   the peer does not hold the cluster cookie
               +-- VersionMismatchError  protocol or Python versions differ
    CapturedException               an exception plus the traceback text it had

Bad arguments raise the builtin ``ValueError``/``TypeError`` at the call site.
"""

from __future__ import annotations


class CapturedException:
    """An exception captured on one process, with its traceback as text."""

    def __init__(self, ex: BaseException, traceback_text: str) -> None:
        self.ex = ex
        self.traceback = traceback_text

    @classmethod
    def capture(cls, ex: BaseException) -> CapturedException:
        import traceback  # here: a worker starts without it, and most calls never fail

        text = "".join(traceback.format_exception(type(ex), ex, ex.__traceback__))
        return cls(ex, text)

    def __repr__(self) -> str:
        return f"CapturedException({self.ex!r})"


class RemoteException(Exception):
    """An exception raised by a call on worker ``pid``; the original is ``captured.ex``."""

    def __init__(self, pid: int, captured: CapturedException) -> None:
        super().__init__(pid, captured)
        self.pid = pid
        self.captured = captured

    def __str__(self) -> str:
        return f"On worker {self.pid}:\n{self.captured.traceback.rstrip()}"


class ProcessExitedException(Exception):
    """A call to, or a wait on, a worker that has exited or been removed."""

    def __init__(self, worker_id: int, reason: str = "") -> None:
        super().__init__(worker_id, reason)
        self.worker_id = worker_id
        self.reason = reason

    def __str__(self) -> str:
        text = f"worker {self.worker_id} has exited or was removed"
        return f"{text}: {self.reason}" if self.reason else text


class InvalidStateError(RuntimeError):
    """An operation that the object's state does not allow (Julia's InvalidStateException)."""


class HandshakeError(ConnectionError):
    """A peer failed the connection handshake; nothing from it was executed."""


class AuthenticationError(HandshakeError):
    """The peer could not prove that it holds the cluster cookie."""


class VersionMismatchError(HandshakeError):
    """The peer speaks another protocol version or runs another Python version."""
