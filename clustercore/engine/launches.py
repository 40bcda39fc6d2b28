"""A launch in progress: the condition its manager notifies, and its cancellation.

``addprocs`` is all or nothing: when it does not return pids (the launch or a
join failed, ``launch_timeout`` ran out, a ``KeyboardInterrupt`` came at any
moment), it *cancels* the launch and ends everything the launch started. One
mechanism for every way out::

    addprocs (caller's thread)            launch hook (clustercore-launch)
      |-- LaunchNotify ------------------->|  report_launched(config) ...
      |   (failure or Ctrl-C)              |
      |-- cancel(): event set, callbacks ->|  waits wake up; report_launched
      |   join threads told, joined        |  ends the config it is given and
      |   workers removed                  |  raises LaunchCancelled; the hook
      |<-- the launch thread ends ---------|  ends what it started and returns
      |   configs never joined are ended
      raise the first error (or KeyboardInterrupt)

A plugin sees the cancellation through :func:`clustercore.plugin.launch_cancelled`
(an event to wait on instead of sleeping) and
:func:`clustercore.plugin.on_launch_cancelled` (a callback, e.g. closing a
connection a thread is blocked on). The launch's ``launch_ntfy`` is a
:class:`LaunchNotify`, a ``threading.Condition`` like Julia's; a plain
``Condition`` (a plugin's own test calling its launch directly) is never
cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import LaunchCancelled

if TYPE_CHECKING:
    from .launching import WorkerConfig

log = logging.getLogger(__name__)


class LaunchNotify(threading.Condition):
    """``launch_ntfy`` of one ``addprocs`` call: a ``Condition`` that can also be cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()  # addprocs makes one as it starts: the launch's start
        self.cancelled = threading.Event()
        self.reason = ""
        self._callbacks: list[Callable[[], Any]] = []
        self._refuse: Callable[[WorkerConfig], None] | None = None

    def on_cancel(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` when the launch is cancelled (at once if it already is)."""
        with self:
            if not self.cancelled.is_set():
                self._callbacks.append(callback)
                return
        _call_quietly(callback)

    def cancel(self, reason: str, refuse: Callable[[WorkerConfig], None]) -> None:
        """Cancel the launch: configs reported from now on go to ``refuse`` (which ends them)."""
        with self:
            if self.cancelled.is_set():
                return
            self.reason = reason
            self._refuse = refuse
            self.cancelled.set()
            callbacks, self._callbacks = self._callbacks, []
            self.notify_all()
        for callback in callbacks:
            _call_quietly(callback)

    def report(self, launched: list[WorkerConfig], config: WorkerConfig) -> None:
        """Hand over one started worker, or, once cancelled, end it and raise ``LaunchCancelled``."""
        with self:
            if not self.cancelled.is_set():
                launched.append(config)
                self.notify_all()
                return
            refuse = self._refuse
        if refuse is not None:
            refuse(config)
        raise LaunchCancelled(f"addprocs gave up on this launch ({self.reason}); the worker reported was ended")


def _call_quietly(callback: Callable[[], Any]) -> None:
    try:
        callback()
    except Exception:
        log.exception("a launch cancellation callback failed")


def cancelled_event(launch_ntfy: threading.Condition) -> threading.Event:
    """The launch's cancellation event; a never-set one for a plain ``Condition``."""
    if isinstance(launch_ntfy, LaunchNotify):
        return launch_ntfy.cancelled
    return threading.Event()


def on_cancel(launch_ntfy: threading.Condition, callback: Callable[[], Any]) -> None:
    """``callback()`` when the launch is cancelled; never for a plain ``Condition``."""
    if isinstance(launch_ntfy, LaunchNotify):
        launch_ntfy.on_cancel(callback)
