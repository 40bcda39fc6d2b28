"""A point in time by which a launch step must be done (``CLUSTERCORE_WORKER_TIMEOUT``)."""

from __future__ import annotations

import time


class Deadline:
    """``Deadline(seconds)``; :meth:`left` is what remains, never less than a millisecond."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.001, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at
