"""A forked worker's output, as its fork server relays it to the driver."""

from __future__ import annotations

import threading
from collections.abc import Callable


class WorkerOutput:
    """One forked worker's stdout and stderr as its fork server relays them: a stream of
    lines (``readline``), ending in ``b""``, with no descriptor of its own. Past
    ``_HOLD`` unread bytes the server is asked to hold the worker's output (its writes
    then wait), below ``_RELEASE`` to let it flow again."""

    _HOLD = 1 << 20
    _RELEASE = 1 << 18

    def __init__(self, key: int, hold: Callable[[int, bool], None]) -> None:
        self._key = key
        self._hold = hold
        self._ready = threading.Condition(threading.Lock())
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline
        self._closed = False
        self._held = False
        self.ended = False  # the worker's end of the pipe closed
        self.claimed = False  # the driver has its answer (see ForkServer._claim_output)

    def feed(self, data: bytes) -> None:
        """From the relay thread, which never waits here: it carries every worker's output."""
        with self._ready:
            if self._closed:
                return
            self._buffer += data
            self._ready.notify_all()
            hold = not self._held and len(self._buffer) >= self._HOLD
            self._held = self._held or hold
        if hold:
            self._hold(self._key, True)

    def end(self) -> None:
        with self._ready:
            self.ended = True
            self._ready.notify_all()

    def readline(self) -> bytes:
        with self._ready:
            while True:
                newline = self._buffer.find(b"\n", self._scanned)
                if newline >= 0 or len(self._buffer) >= self._HOLD or self.ended or self._closed:
                    end = newline + 1 if newline >= 0 else len(self._buffer)
                    line = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._scanned = 0
                    release = self._held and len(self._buffer) < self._RELEASE
                    self._held = self._held and not release
                    break
                self._scanned = len(self._buffer)
                self._ready.wait()
        if release:
            self._hold(self._key, False)
        return line

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._buffer.clear()
            release, self._held = self._held, False
            self._ready.notify_all()
        if release:
            self._hold(self._key, False)

    @property
    def closed(self) -> bool:
        return self._closed
