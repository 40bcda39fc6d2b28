"""Ctrl-C held back on the main thread while something must not be cut in two."""

from __future__ import annotations

import _signal
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def call_holding_sigint(fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)`` on the main thread with ``SIGINT`` held until it returns, then delivered
    (so a ``KeyboardInterrupt`` comes after it, never from inside it). The main thread only:
    that is where Python runs signal handlers and where they can be swapped; on any other
    thread, where no ``KeyboardInterrupt`` arrives, ``fn(*args)`` as it is."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    handler = _signal.getsignal(signal.SIGINT)
    if not callable(handler):
        return fn(*args)
    came: list[int] = []
    _signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        return fn(*args)
    finally:
        _signal.signal(signal.SIGINT, handler)
        if came:
            handler(signal.SIGINT, None)


class WaitableThread(threading.Thread):
    """A thread the main thread may wait for while Ctrl-C can come: :meth:`wait` instead of
    ``join``. In CPython before 3.13, a ``KeyboardInterrupt`` that interrupts ``join()`` while
    the thread still runs releases the thread's own state lock (the bpo-45274 clean-up
    cannot tell whose lock it is): the thread is taken for stopped, ``is_alive()`` is False
    and every later ``join()`` returns at once, though it runs on. :meth:`wait` waits on an
    event of its own instead, which an interrupted wait leaves as it was."""

    def __init__(self, target: Callable[..., object], *args: object, name: str) -> None:
        super().__init__(target=target, args=args, name=name, daemon=True)
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.finished.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the thread has ended (or ``timeout``); whether it has. A thread never started
        has nothing to wait for."""
        if self.ident is None:
            return True
        if not self.finished.wait(timeout):
            return False
        self.join()  # its target has returned: only the thread's own clean-up is left
        return True
