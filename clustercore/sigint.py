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
