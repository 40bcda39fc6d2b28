"""A forked worker's output, as its fork server relays them to the driver."""

from __future__ import annotations

import threading
from collections.abc import Callable

LineTaker = Callable[[bytes, Callable[[], None]], None]


class WorkerOutput:
    """One forked worker's stdout and stderr as its fork server relays them, with no
    descriptor of its own: the relay thread :meth:`feed`\\ s it, and it hands whole lines
    on to the core's forwarder (:meth:`deliver_lines`), or to :meth:`readline`.

    Lines handed on but not yet done with (printed), or not yet read, count against
    ``_HOLD`` bytes: past it the server is asked to hold the worker's output (its writes
    then wait, as on a pipe of its own), below ``_RELEASE`` to let it flow again. So a
    worker printing into a stuck stdout is held, and the others' output flows on. A
    hold or release is sent while ``_ready`` is held, where it was decided, so the
    server hears them in the order they were decided."""

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
        self._taker: LineTaker | None = None
        self._on_end: Callable[[], None] | None = None
        self._outstanding = 0  # bytes handed to the taker and not done with
        self._delivering = threading.Lock()  # the taker sees lines in order, one thread at a time
        self.ended = False  # the worker's end of the pipe closed
        self.claimed = False  # the driver has its answer (see ForkServer._claim_output)

    def deliver_lines(self, take: LineTaker, on_end: Callable[[], None]) -> None:
        """From now on hand each line to ``take(line, done)`` on the relay thread, the
        lines already here first; ``on_end()`` once the output has ended."""
        with self._delivering:
            with self._ready:
                self._taker, self._on_end = take, on_end
            self._deliver()

    def feed(self, data: bytes) -> None:
        """From the relay thread, which never waits here: it carries every worker's output."""
        with self._delivering:
            with self._ready:
                if self._closed:
                    return
                self._buffer += data
                self._ready.notify_all()
                delivering = self._taker is not None
                if not delivering and len(self._buffer) >= self._HOLD:
                    self._set_held(True)
            if delivering:
                self._deliver()

    def end(self) -> None:
        with self._delivering:
            with self._ready:
                self.ended = True
                self._ready.notify_all()
                delivering = self._taker is not None
            if delivering:
                self._deliver()

    def _deliver(self) -> None:
        """Hand the whole lines buffered to the taker (all of it, then the end, once the
        output has ended); the caller holds ``_delivering``."""
        with self._ready:
            take, on_end = self._taker, self._on_end
            if take is None:
                return
            cut = len(self._buffer) if self.ended or len(self._buffer) >= self._HOLD else self._buffer.rfind(b"\n") + 1
            lines = _lines(bytes(self._buffer[:cut]))
            del self._buffer[:cut]
            self._outstanding += cut
            if self._outstanding >= self._HOLD:
                self._set_held(True)
            finished = self.ended and on_end is not None
            if finished:
                self._on_end = None  # once
        for line in lines:
            take(line, self._done_with(len(line)))
        if finished and on_end is not None:
            on_end()

    def _done_with(self, size: int) -> Callable[[], None]:
        def done() -> None:
            with self._ready:
                self._outstanding -= size
                if self._outstanding < self._RELEASE:
                    self._set_held(False)

        return done

    def _set_held(self, held: bool) -> None:
        """Tell the server to hold (or release) the worker's output, if that changes
        anything; the caller holds ``_ready``, so the server hears what was decided last."""
        if held != self._held:
            self._held = held
            self._hold(self._key, held)

    def readline(self) -> bytes:
        with self._ready:
            while True:
                newline = self._buffer.find(b"\n", self._scanned)
                if newline >= 0 or len(self._buffer) >= self._HOLD or self.ended or self._closed:
                    end = newline + 1 if newline >= 0 else len(self._buffer)
                    line = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._scanned = 0
                    if len(self._buffer) < self._RELEASE:
                        self._set_held(False)
                    return line
                self._scanned = len(self._buffer)
                self._ready.wait()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._buffer.clear()
            self._taker = self._on_end = None  # the forwarder closes it from its on_end: nothing more
            self._set_held(False)
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def _lines(data: bytes) -> list[bytes]:
    """``data`` cut after each ``\\n`` (as ``readline`` cuts: a lone ``\\r`` of a progress bar
    stays inside its line); the rest, if any, is the last line."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines
