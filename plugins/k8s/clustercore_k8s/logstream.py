"""A worker pod's log, followed through the API server, as the worker's output stream.

The worker prints ``clustercore_worker:PORT#HOST`` first; :meth:`PodLog.read_address`
reads up to that line (bounded by a timer), keeping earlier lines, and the
core's output forwarder then reads the rest with ``readline`` (those earlier
lines first) and prints them as ``From worker N:``.
"""

from __future__ import annotations

import threading
from collections import deque

from clustercore.plugin import parse_address_line

from .kubeapi import KubeApi, shutdown

CHUNK = 65536


class PodLog:
    """``readline()`` over a followed pod log; ``b""`` once the log ends or is closed."""

    def __init__(self, api: KubeApi, name: str) -> None:
        self.api = api
        self.name = name
        self._resp = api.follow_log(name)
        self._buffer = bytearray()
        self._early: deque[bytes] = deque()
        self._ended = False

    def read_address(self, timeout: float) -> tuple[str, int] | None:
        """The ``(host, port)`` the worker printed, or ``None`` if the log ended or ``timeout`` passed."""
        timer = threading.Timer(timeout, self.close)
        timer.daemon = True
        timer.start()
        try:
            while line := self._next_line():
                text = line.decode(errors="replace").rstrip("\r\n")
                address = parse_address_line(text)  # the whole line: not one that quotes it
                if address is not None:
                    return address
                self._early.append(line)
        finally:
            timer.cancel()
        return None

    def readline(self) -> bytes:
        if self._early:
            return self._early.popleft()
        return self._next_line()

    def _next_line(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line
            if self._ended:
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest
            try:
                chunk = self._resp.read1(CHUNK)
            except Exception:  # noqa: BLE001 - a closed or broken stream ends the log
                chunk = b""
            if chunk:
                self._buffer += chunk
            else:
                self.close()

    def close(self) -> None:
        self._ended = True
        self.api.forget_stream(self._resp)
        shutdown(self._resp)
