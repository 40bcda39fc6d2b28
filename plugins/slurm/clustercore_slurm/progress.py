"""What the user sees while a step starts: the job's queue state and ``k of N workers ready``.

Lines go to stderr, like srun's own. With ``progress=None`` a fast start
stays silent; once the job waits in the queue, or the start takes longer
than ``QUIET_PERIOD``, every change is shown.
"""

from __future__ import annotations

import sys
import time

QUIET_PERIOD = 2.0


class Progress:
    def __init__(self, mode: bool | None) -> None:
        self.mode = mode
        self.started = time.monotonic()
        self.waited = False
        self.spoken = False
        self._last_state: tuple[str, str] | None = None
        self._last_ready: tuple[int, int | None] | None = None

    def _on(self) -> bool:
        if self.mode is not None:
            return self.mode
        return self.waited or time.monotonic() - self.started >= QUIET_PERIOD

    def _say(self, text: str) -> None:
        self.spoken = True
        print(text, file=sys.stderr, flush=True)

    def job_state(self, jobid: str | None, state: str, reason: str) -> None:
        """E.g. ``slurm job 42: PENDING (Resources)``, once per change."""
        self.waited = True
        if (state, reason) == self._last_state:
            return
        self._last_state = (state, reason)
        if self._on():
            shown = f"{state} ({reason})" if reason and reason != "None" else state
            self._say(f"slurm job {jobid or '?'}: {shown}")

    def ready(self, jobid: str | None, count: int, total: int | None) -> None:
        """``slurm job 42: k of N workers ready``, once per change."""
        if (count, total) == self._last_ready:
            return
        first = self._last_ready is None
        self._last_ready = (count, total)
        if first and count == 0:
            return
        final = total is not None and count == total
        if self._on() or (final and self.spoken):
            self._say(f"slurm job {jobid or '?'}: {count} of {total if total is not None else '?'} workers ready")
