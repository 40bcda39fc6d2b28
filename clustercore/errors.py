"""Exceptions raised by clustercore.

Exception tree::

    Exception
     +-- RemoteException            a call failed on another process (``.pid``, ``.captured``)
     +-- ProcessExitedException     the worker died or was removed
     +-- ExceptionStandIn           ``captured.ex`` of a remote exception that cannot be rebuilt here
     +-- LaunchCancelled            in a manager's ``launch``: ``addprocs`` gave up on it (a plugin sees it)
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

from typing import Any


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

    def __reduce__(self) -> tuple[Any, ...]:
        """The exception travels pickled on its own, with its name and message beside it:
        a receiver that cannot rebuild it (its class is not importable there, or its
        ``__init__`` rejects its ``args``) gets an :class:`ExceptionStandIn` instead."""
        ex = self.ex
        return _rebuild_captured, (_pickled_or_none(ex), _qualified_name(type(ex)), str(ex), self.traceback)


class ExceptionStandIn(Exception):
    """Stands in for a remote exception that could not be rebuilt on this process.

    ``type_name`` is the original's qualified class name, ``message`` its ``str()``,
    ``reason`` why it could not be rebuilt here.
    """

    def __init__(self, type_name: str, message: str, reason: str = "") -> None:
        super().__init__(type_name, message, reason)
        self.type_name = type_name
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def _qualified_name(cls: type) -> str:
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module == "builtins" else f"{module}.{name}"


def _pickled_or_none(ex: BaseException) -> bytes | None:
    import cloudpickle

    try:
        return cloudpickle.dumps(ex, protocol=5)
    except Exception:  # noqa: BLE001 - the receiver gets a stand-in
        return None


def _rebuild_captured(pickled: bytes | None, type_name: str, message: str, traceback_text: str) -> CapturedException:
    import pickle

    if pickled is None:
        ex: BaseException = ExceptionStandIn(type_name, message, "it could not be pickled where it was raised")
    else:
        try:
            ex = pickle.loads(pickled)
        except Exception as exc:  # noqa: BLE001 - e.g. its class exists only where it was raised
            ex = ExceptionStandIn(type_name, message, f"it could not be unpickled here: {exc!r}")
    return CapturedException(ex, traceback_text)


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


class LaunchCancelled(Exception):
    """Raised in a manager's ``launch`` (by ``report_launched``) once ``addprocs`` has given up
    on that launch: it failed elsewhere, timed out, or the caller was interrupted. The launch
    should end what it started and return; the caller of ``addprocs`` never sees this."""


class InvalidStateError(RuntimeError):
    """An operation that the object's state does not allow (Julia's InvalidStateException)."""


class HandshakeError(ConnectionError):
    """A peer failed the connection handshake; nothing from it was executed."""


class AuthenticationError(HandshakeError):
    """The peer could not prove that it holds the cluster cookie."""


class VersionMismatchError(HandshakeError):
    """The peer speaks another protocol version or runs another Python version."""
