"""Loggers that import :mod:`logging` on first use: a worker starts without it.

Every clustercore logger is a child of ``"clustercore"``, whose level comes
from ``CLUSTERCORE_LOG_LEVEL`` (default ``WARNING``) when the first message
is logged.

A warning that strangers can trigger at will (a worker's "rejected a
connection") is rate-limited: after ``log.limit(template)``, warnings logged
with that template print at most one line per interval; the next line that
prints says how many there were since the last one, and whoever waits on
timers calls ``log.flush_limits()`` so that a burst's count is not held back
for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimit:
    """At most one line per ``interval`` seconds for one recurring message."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._held = 0  # messages since the last line printed
        self._latest = ""
        self._printed_at = 0.0
        self._next = float("-inf")  # when the next line may print

    def admit(self, text: str) -> str | None:
        """The line to print for one more message ``text`` now, or ``None`` (held back and counted)."""
        now = self._clock()
        with self._lock:
            if now < self._next:
                self._held += 1
                self._latest = text
                return None
            return self._line(now, text, self._held + 1)

    def overdue(self) -> str | None:
        """The line for the messages held back, once one may print; else ``None``."""
        now = self._clock()
        with self._lock:
            if not self._held or now < self._next:
                return None
            return self._line(now, self._latest, self._held)

    def due(self) -> float | None:
        """When (on the clock) the messages held back may print; ``None`` if none are."""
        with self._lock:
            return self._next if self._held else None

    def _line(self, now: float, text: str, count: int) -> str:
        since = now - self._printed_at
        self._held, self._printed_at, self._next = 0, now, now + self.interval
        return text if count == 1 else f"{text} ({count} times in the last {since:.0f} s)"


class LazyLogger:
    """Stands for ``logging.getLogger(name)`` until a method of it is used."""

    __slots__ = ("_limits", "_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None
        self._limits: dict[str, RateLimit] = {}

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)

    def _real(self) -> Any:
        if self._logger is None:
            self._logger = _real_logger(self._name)
        return self._logger

    def limit(self, template: str, interval: float = 10.0) -> RateLimit:
        """Rate-limit ``warning(template, ...)`` from now on (the same limit for the same template)."""
        found = self._limits.get(template)
        if found is None:
            found = self._limits[template] = RateLimit(interval)
        return found

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        limit = self._limits.get(msg) if self._limits and isinstance(msg, str) else None
        if limit is not None:
            try:
                text = msg % args if args else msg
            except (TypeError, ValueError):
                text = f"{msg} {args!r}"
            line = limit.admit(text)
            if line is None:
                return
            msg, args = "%s", (line,)
        kwargs.setdefault("stacklevel", 2)  # the caller's line, not this one
        self._real().warning(msg, *args, **kwargs)

    def flush_limits(self) -> float | None:
        """Print the counts of rate-limited warnings that are due; when the next one is (or ``None``)."""
        due: list[float] = []
        for limit in tuple(self._limits.values()):
            line = limit.overdue()
            if line is not None:
                self._real().warning("%s", line)
            when = limit.due()
            if when is not None:
                due.append(when)
        return min(due, default=None)


def _real_logger(name: str) -> Any:
    import logging
    import os

    level = os.environ.get("CLUSTERCORE_LOG_LEVEL")
    if level:
        logging.getLogger("clustercore").setLevel(level)
    return logging.getLogger(name)
