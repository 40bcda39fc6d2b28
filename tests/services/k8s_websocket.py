"""Just enough RFC 6455 for the server side of a Kubernetes streaming connection."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
from io import BufferedIOBase

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 64 << 20


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class WebSocket:
    """A server-side connection: masked frames in, unmasked frames out; thread-safe sends."""

    def __init__(self, sock: socket.socket, rfile: BufferedIOBase) -> None:
        self._sock, self._rfile = sock, rfile
        self._send_lock = threading.Lock()
        self.close_sent = False

    def _read(self, n: int) -> bytes:
        data = self._rfile.read(n)
        if len(data) != n:
            raise EOFError("websocket connection closed")
        return data

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one unfragmented frame."""
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self._send_lock:
            if self.close_sent:
                raise BrokenPipeError("websocket close already sent")
            self._sock.sendall(header + payload)
            self.close_sent = opcode == OP_CLOSE

    def close(self, code: int = 1000) -> None:
        """Send a close frame (once)."""
        try:
            self.send(OP_CLOSE, struct.pack("!H", code))
        except OSError:
            pass

    def recv(self) -> tuple[int, bytes]:
        """The next data message (opcode, payload), answering pings; raises ``EOFError`` at the end."""
        opcode, parts = None, []
        while True:
            b0, b1 = self._read(2)
            fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if not b1 & 0x80:
                raise EOFError("client frame not masked")
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            if n > MAX_MESSAGE:
                raise EOFError("websocket frame too large")
            mask = self._read(4)
            payload = _unmask(self._read(n), mask) if n else b""
            if op == OP_PING:
                self.send(OP_PONG, payload)
            elif op == OP_CLOSE:
                return OP_CLOSE, payload
            elif op != OP_PONG:
                opcode = op if op != OP_CONT else opcode
                parts.append(payload)
                if fin:
                    return opcode or OP_BINARY, b"".join(parts)
