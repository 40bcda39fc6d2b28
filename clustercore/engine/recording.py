"""A trace's records on each process: what ``clustercore.trace()`` starts and stops.

:func:`start_trace` sets ``CallRunner.trace`` to a bounded list, to which the runner
appends one record per user call it serves (``(function, elements, bytes in, start,
end, failed)``, on this process's clock); :func:`stop_trace` takes it back. Both are
``internal`` (not counted as calls, run even while every call here is stuck); the
driver sends them to every process with :func:`clustercore.engine.requests.broadcast_call`.
"""

from __future__ import annotations

import time
from typing import Any

from .callrunner import internal
from .cluster import PGRP
from .sampling import describe

_TRACE_LIMIT = 1_000_000  # records kept per process and trace; later ones are counted, not kept


@internal
def start_trace() -> float:
    """Record every user call from now on; this process's clock (``time.time()``)."""
    runner = PGRP.runner
    if runner.trace is None:
        runner.trace = _BoundedList(_TRACE_LIMIT)
    return time.time()


@internal
def stop_trace() -> tuple[float, list[tuple[str, int, int, float, float, bool]], int]:
    """Stop recording; this process's clock, its records ``(function, elements, bytes in,
    start, end, failed)`` and how many were dropped past the limit."""
    runner = PGRP.runner
    trace, runner.trace = runner.trace, None
    now = time.time()
    if trace is None:
        return now, [], 0
    records = [(describe(f), elements, nbytes, start, end, failed) for f, elements, nbytes, start, end, failed in trace]
    return now, records, getattr(trace, "dropped", 0)


class _BoundedList(list):  # type: ignore[type-arg]
    """A list that keeps its first ``limit`` items and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, item: Any) -> None:
        if len(self) < self.limit:
            super().append(item)
        else:
            self.dropped += 1
