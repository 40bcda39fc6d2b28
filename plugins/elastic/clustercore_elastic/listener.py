"""The driver's listener: connections from anyone, admitted only once they proved the cookie.

One thread runs :class:`Listener`. It accepts, sends each connection the
challenge of :mod:`.admission`, and reads the proof and then the address line
without blocking, all connections at once, on that thread alone: a connection
costs one descriptor and no thread until it is admitted. What it may cost:

- at most ``max_pending`` connections are in admission at once; a newcomer
  beyond that closes the oldest, so idle connections cannot lock out a worker;
- each has ``deadline`` seconds from ``accept()`` to finish (slow-loris);
- every read has a fixed size (the proof) or a cap (the address line), and
  nothing is unpickled: the core's handshake comes only after admission.

Admitted connections go to ``admit`` (the manager queues them for
``addprocs``). Rejections are logged at most once per ``LOG_INTERVAL`` seconds,
with a count by reason; :attr:`Listener.rejected` keeps the totals.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clustercore.plugin import parse_address_line

from . import admission

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between two "rejected" lines
ACCEPT_BATCH = 16  # accepts in a row before the connections already there get a look
ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed (EMFILE, ...)

# reasons a connection is turned away, as counted in Listener.rejected
WRONG_COOKIE = "wrong cookie"
WRONG_VERSION = "version mismatch"
NOT_A_WORKER = "not a clustercore worker"
TOO_SLOW = "too slow"
CLOSED_EARLY = "closed early"
CROWDED_OUT = "crowded out"


@dataclass(eq=False)
class Entrant:
    """A connection being admitted."""

    sock: socket.socket
    peer: str
    deadline: float
    nonce: bytes = b""
    proved: bool = False
    buf: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, eq=False)
class Admitted:
    """A connection that proved the cookie, and where its worker listens for the others."""

    sock: socket.socket
    peer: str
    host: str
    port: int


class Listener:
    def __init__(
        self, sock: socket.socket, cookie: str, admit: Callable[[Admitted], None], deadline: float, max_pending: int
    ) -> None:
        self.sock = sock
        self.cookie = cookie
        self.admit = admit
        self.deadline = deadline
        self.max_pending = max_pending
        self.name = _describe(sock.getsockname())
        self.rejected: collections.Counter[str] = collections.Counter()
        self.latest_rejection = ""
        self._entrants: dict[int, Entrant] = {}  # by descriptor, oldest first
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        self._paused_until = 0.0
        self._unlogged: collections.Counter[str] = collections.Counter()
        self._log_next = 0.0
        self._thread = threading.Thread(target=self._run, name=f"clustercore-elastic-{self.name}", daemon=True)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._selector.register(self.sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting; connections in admission are closed. Waits for the thread."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    # --- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                self._step()
        except Exception:
            log.exception("the elastic listener at %s failed; it accepts no more workers", self.name)
        finally:
            for entrant in list(self._entrants.values()):
                entrant.sock.close()
            self._entrants.clear()
            self._selector.close()
            self.sock.close()
            self._wake_r.close()
            self._wake_w.close()

    def _step(self) -> None:
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self._selector.register(self.sock, selectors.EVENT_READ)
        for key, _ in self._selector.select(self._timeout(now)):
            if key.fileobj is self.sock:
                if not self._paused_until:
                    self._accept()
            elif key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(64)
            else:
                entrant = self._entrants.get(key.fd)
                if entrant is not None:
                    self._read(entrant)
        now = time.monotonic()
        for entrant in [e for e in self._entrants.values() if now >= e.deadline]:
            stage = "the address line" if entrant.proved else "the cookie proof"
            self._reject(entrant, TOO_SLOW, f"{entrant.peer} sent no {stage} within {self.deadline:g} s")
        self._flush_log(now)

    def _timeout(self, now: float) -> float | None:
        times = [e.deadline for e in self._entrants.values()]
        if self._paused_until:
            times.append(self._paused_until)
        if self._unlogged:
            times.append(self._log_next)
        return max(0.0, min(times) - now) if times else None

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET):
                    continue
                self._paused_until = time.monotonic() + ACCEPT_PAUSE  # the others still get served
                self._selector.unregister(self.sock)
                log.warning("the elastic listener at %s could not accept a connection: %s", self.name, exc)
                return
            self._enter(sock, _describe(addr))

    def _enter(self, sock: socket.socket, peer: str) -> None:
        if len(self._entrants) >= self.max_pending:
            oldest = next(iter(self._entrants.values()))
            self._reject(
                oldest,
                CROWDED_OUT,
                f"{oldest.peer} was dropped for a newer connection: {self.max_pending} were joining",
            )
        sock.setblocking(False)
        message, nonce = admission.challenge()
        entrant = Entrant(sock, peer, time.monotonic() + self.deadline, nonce)
        try:
            sent = sock.send(message)  # a fresh socket's buffer takes it whole
        except OSError as exc:
            self._note(CLOSED_EARLY, f"{peer}: {exc}")
            sock.close()
            return
        if sent != len(message):
            self._note(CLOSED_EARLY, f"{peer} took only {sent} bytes of the challenge")
            sock.close()
            return
        self._entrants[sock.fileno()] = entrant
        self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, entrant: Entrant) -> None:
        want = admission.PROOF_LEN - len(entrant.buf) if not entrant.proved else admission.ADDRESS_LINE_MAX
        try:
            data = entrant.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._reject(entrant, CLOSED_EARLY, f"{entrant.peer}: {exc}")
            return
        if not data:
            stage = "the address line" if entrant.proved else "the cookie proof"
            self._reject(entrant, CLOSED_EARLY, f"{entrant.peer} closed the connection before {stage}")
            return
        entrant.buf += data
        if not entrant.proved:
            if len(entrant.buf) == admission.PROOF_LEN:
                self._check_proof(entrant)
            return
        end = entrant.buf.find(b"\n")
        if end < 0:
            if len(entrant.buf) >= admission.ADDRESS_LINE_MAX:
                self._reject(entrant, NOT_A_WORKER, f"{entrant.peer} sent no address line in its first 256 bytes")
            return
        line, rest = bytes(entrant.buf[:end]), entrant.buf[end + 1 :]
        address = parse_address_line(line.decode("ascii", "replace"))
        if address is None or rest:
            self._reject(entrant, NOT_A_WORKER, f"{entrant.peer} sent {line[:80]!r} for its address line")
            return
        self._forget(entrant)
        host, port = address
        peer_host = entrant.sock.getpeername()[0]
        if host.startswith("127.") and not peer_host.startswith("127."):
            host = peer_host  # it knows no better name for itself than loopback: use where it came from
        entrant.sock.setblocking(True)
        _enable_keepalive(entrant.sock)
        self.admit(Admitted(entrant.sock, entrant.peer, host, port))

    def _check_proof(self, entrant: Entrant) -> None:
        proof = bytes(entrant.buf)
        entrant.buf.clear()
        status, verdict = admission.check(self.cookie, entrant.nonce, proof)
        with contextlib.suppress(OSError):
            entrant.sock.send(verdict)  # 5 bytes into an empty buffer
        if status == admission.WRONG_COOKIE:
            self._reject(
                entrant, WRONG_COOKIE, f"{entrant.peer} failed the cookie proof (a wrong cookie, or not a worker)"
            )
        elif status == admission.WRONG_VERSION:
            theirs = admission.describe_versions(proof[admission.MAC_LEN :])
            ours = admission.describe_versions(admission.local_versions())
            self._reject(entrant, WRONG_VERSION, f"{entrant.peer} runs {theirs}; this driver runs {ours}")
        else:
            entrant.proved = True

    # --- bookkeeping --------------------------------------------------------------------

    def _forget(self, entrant: Entrant) -> None:
        self._selector.unregister(entrant.sock)
        del self._entrants[entrant.sock.fileno()]

    def _reject(self, entrant: Entrant, reason: str, detail: str) -> None:
        self._forget(entrant)
        self._note(reason, detail)  # counted before the peer can see the close
        entrant.sock.close()

    def _note(self, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        self.latest_rejection = detail
        self._unlogged[reason] += 1
        self._flush_log(time.monotonic())

    def _flush_log(self, now: float) -> None:
        if not self._unlogged or now < self._log_next:
            return
        total = sum(self._unlogged.values())
        if total == 1:
            log.warning("the elastic listener at %s rejected a connection: %s", self.name, self.latest_rejection)
        else:
            counts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self._unlogged.items()))
            log.warning(
                "the elastic listener at %s rejected %d connections (%s); the latest: %s",
                self.name,
                total,
                counts,
                self.latest_rejection,
            )
        self._unlogged.clear()
        self._log_next = now + LOG_INTERVAL


def _describe(addr: object) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)


def _enable_keepalive(sock: socket.socket) -> None:
    """A worker whose host vanishes (no FIN, no RST) is noticed within about a minute."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
