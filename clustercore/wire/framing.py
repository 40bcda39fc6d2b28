"""Length-prefixed frames with out-of-band buffers.

Every message is one frame (little-endian)::

    offset  size  field
    0       4     payload length P (u32)
    4       1     message type (u8)
    5       1     flags (u8; bit 0: the payload is an exception to raise)
    6       2     number of out-of-band buffers B (u16)
    8       4+8   response reference id (whence i32, id u64)   Julia's MsgHeader
    20      4+8   notify reference id   (whence i32, id u64)
    32      8*B   length of each out-of-band buffer (u64)
    ...     P     payload: a pickle (protocol 5)
    ...           the B buffers, back to back

A buffer whose length has bit 63 set is not in the stream: it is a sealed
memfd of that length (bit 63 clear), the next of the file descriptors that
came with the frame's first byte (``SCM_RIGHTS``, Unix sockets only; see
:mod:`clustercore.wire.memfd`).

The payload's pickle refers to the buffers by position (``pickle.loads(...,
buffers=...)``), so a large numpy array or bytes object goes from the sender's
memory to the socket with ``sendmsg`` and from the socket into the buffer it
will live in with ``recv_into``: no copies in between. ``docs/protocol.md``
describes the same layout; a golden-bytes test keeps the two honest.
"""

from __future__ import annotations

import mmap
import socket
import struct
import threading
import weakref
from typing import Any

from . import memfd
from .transport import FdProtocolError, Transport, UnixTransport

HEADER = struct.Struct("<IBBHiQiQ")
_unpack_header = HEADER.unpack_from
NO_REF = (0, 0)
FLAG_ERROR = 1
IN_MEMFD = 1 << 63  # a buffer's length with this bit: the buffer is a memfd, not bytes

_READ_CHUNK = 256 * 1024  # the reused receive buffer: one recv usually holds a small frame whole
_MMAP_THRESHOLD = 1 << 20  # buffers this large get their own huge-page-backed mapping
_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 0))  # a plain int: "&" on the enum is a Python call
_CMSG_CLOEXEC = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))  # received fds are not inherited


class Frame:
    """One received message; ``payload`` is valid until the next ``read_frame``."""

    __slots__ = ("buffers", "flags", "msg_type", "notify", "payload", "response")

    def __init__(
        self,
        msg_type: int,
        flags: int,
        response: tuple[int, int],
        notify: tuple[int, int],
        payload: memoryview,
        buffers: list[Any],
    ) -> None:
        self.msg_type = msg_type
        self.flags = flags
        self.response = response
        self.notify = notify
        self.payload = payload
        self.buffers = buffers

    def __repr__(self) -> str:
        return f"Frame(type={self.msg_type}, flags={self.flags}, response={self.response}, notify={self.notify})"


def encode_frame(
    msg_type: int,
    payload: Any,
    buffers: list[Any] = (),  # type: ignore[assignment]
    response: tuple[int, int] = NO_REF,
    notify: tuple[int, int] = NO_REF,
    flags: int = 0,
) -> list[Any]:
    """The buffers that make one frame, in order (for a transport's send methods)."""
    head = HEADER.pack(len(payload), msg_type, flags, len(buffers), *response, *notify)
    if not buffers:
        return [head, payload]
    head += struct.pack(f"<{len(buffers)}Q", *(memoryview(b).nbytes for b in buffers))
    return [head, payload, *buffers]


def encode_frame_with_memfds(
    transport: UnixTransport,
    msg_type: int,
    payload: Any,
    buffers: list[Any],
    response: tuple[int, int] = NO_REF,
    notify: tuple[int, int] = NO_REF,
    flags: int = 0,
) -> list[Any]:
    """:func:`encode_frame` for a link that passes file descriptors: buffers of
    ``memfd.MEMFD_MIN`` bytes or more go as memfds, in an ``FdGroup`` ahead of the frame."""
    sizes = [memoryview(b).nbytes for b in buffers]
    if max(sizes) < memfd.MEMFD_MIN:
        return encode_frame(msg_type, payload, buffers, response, notify, flags)
    fds: list[int] = []
    inline: list[Any] = []
    lengths: list[int] = []
    try:
        for buf, size in zip(buffers, sizes, strict=True):
            if size >= memfd.MEMFD_MIN and len(fds) < memfd.MAX_FDS:
                fds.append(memfd.fd_for(buf))
                lengths.append(size | IN_MEMFD)
            else:
                inline.append(buf)
                lengths.append(size)
    except BaseException:
        memfd.close_all(fds)
        raise
    group = transport.fd_group(fds)
    head = HEADER.pack(len(payload), msg_type, flags, len(buffers), *response, *notify)
    return [group, head + struct.pack(f"<{len(lengths)}Q", *lengths), payload, *inline]


def alloc_buffer(size: int) -> Any:
    """A writable buffer for received data that outlives the frame."""
    if size >= _MMAP_THRESHOLD:
        return _recycled.take(size)
    return bytearray(size)


class Recycler:
    """Mappings for large received buffers, each reused once nothing holds its buffer.

    The kernel zeroes every page of a new anonymous mapping as the receive first writes
    it, which for a large buffer costs more than copying its bytes from the socket
    (measured: 100 MiB took 38 ms to zero and 25 ms to copy). So when a buffer
    :meth:`take` gave out is gone (the array made on it, every view of it), its mapping
    comes back here, and the next buffer of the same size is received into it: its pages
    are already there. It comes back marked ``MADV_FREE``: the kernel may take its pages
    whenever it needs memory (they then read as zeros), so what is kept here is a cache
    the system can reclaim, never more than ``limit`` bytes.

    The buffer given out is a ctypes array over the mapping, which everything that
    uses the memory holds (numpy arrays and memoryviews, through the buffer protocol);
    the mapping itself is reachable only from here. A receive fills the buffer whole
    before its frame is delivered, so what a mapping held before is never seen.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0  # bytes of the mappings in ``free``
        self.free: dict[int, list[mmap.mmap]] = {}  # size -> mappings nothing uses
        self._lock = threading.Lock()

    def take(self, size: int) -> Any:
        """A writable buffer of ``size`` bytes (of undefined contents) on a mapping of its own."""
        import ctypes  # the first large buffer a process receives: not worth loading before

        region = None
        if self._lock.acquire(blocking=False):  # never waits: busy (or held across a fork), map anew
            try:
                free = self.free.get(size)
                if free:
                    region = free.pop()
                    self.kept -= size
            finally:
                self._lock.release()
        if region is None:
            region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            _advise(region, _MADV_HUGEPAGE)
        buffer = (ctypes.c_ubyte * size).from_buffer(region)
        done = weakref.finalize(buffer, self._give_back, region, [])
        done.atexit = False  # at exit the process takes every mapping with it
        return buffer

    def _give_back(self, region: mmap.mmap, spare: list[mmap.mmap]) -> None:
        """The buffer on ``region`` is gone (runs in whichever thread let go of it last)."""
        size = len(region)
        if size > self.limit or not _advise(region, _MADV_FREE):
            return  # dropped: unmapped once its last export is released
        if not self._lock.acquire(blocking=False):
            return  # busy (a signal handler let go of it while this thread was in take()): drop it
        try:  # nothing here allocates an object the cyclic GC tracks: no finalizer runs inside
            if self.kept + size <= self.limit:
                free = self.free.setdefault(size, spare)
                free.append(region)
                self.kept += size
        finally:
            self._lock.release()


def _advise(region: mmap.mmap, advice: int) -> bool:
    if not advice:
        return False
    try:
        region.madvise(advice)
    except OSError:
        return False
    return True


_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 0)  # 2 MiB pages where the kernel has them: fewer faults
_MADV_FREE = getattr(mmap, "MADV_FREE", 0)
RECYCLE_LIMIT = 256 << 20  # bytes of freed receive buffers kept for reuse, per process
_recycled = Recycler(RECYCLE_LIMIT)


class FrameReader:
    """Reads frames from a transport through one reused receive buffer."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._fds: list[int] | None = None
        self._recvmsg_into: Any = None  # a Unix link: every read takes file descriptors too
        if isinstance(transport, UnixTransport):
            self._fds = transport.received_fds
            self._recvmsg_into = transport.sock.recvmsg_into
            self._ancillary_size = transport.ancillary_size
        # Anonymous memory, zeroed by the kernel page by page as it is first written: a link
        # that carries small frames costs a page or two, not the whole chunk (a driver with
        # 1,024 workers holds 1,024 readers; a bytearray is written whole when made).
        self._buf = mmap.mmap(-1, _READ_CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def read_frame(self) -> Frame | None:
        """The next frame, or ``None`` at a clean end of stream between frames."""
        if self._end - self._start < HEADER.size and not self._fill(HEADER.size, eof_ok=True):
            return None
        start = self._start
        plen, msg_type, flags, nbuf, rw, rid, nw, nid = _unpack_header(self._buf, start)
        start += HEADER.size
        if not nbuf and self._end - start >= plen:  # the usual case: a small frame, all here
            self._start = start + plen
            if self._fds and self._start == self._end:
                self._unclaimed_fds()
            return Frame(msg_type, flags, (rw, rid), (nw, nid), self._view[start : self._start], [])
        self._start = start
        lengths: tuple[int, ...] = ()
        if nbuf:
            self._fill(8 * nbuf)
            lengths = struct.unpack_from(f"<{nbuf}Q", self._buf, self._start)
            self._start += 8 * nbuf
        mapped = self._map_memfds(lengths) if any(n & IN_MEMFD for n in lengths) else {}
        payload = self._read_exact(plen, into=None)
        buffers = [
            mapped[i] if i in mapped else self._read_exact(n, into=alloc_buffer(n)) for i, n in enumerate(lengths)
        ]
        if self._fds and self._start == self._end:
            self._unclaimed_fds()
        return Frame(msg_type, flags, (rw, rid), (nw, nid), payload, buffers)

    def _map_memfds(self, lengths: tuple[int, ...]) -> dict[int, Any]:
        """The frame's memfd buffers, checked and mapped, by position; closes the link (raises
        ``FdProtocolError``) if the fds that came with the frame do not match them."""
        fds = self._fds
        wanted = [(i, n & ~IN_MEMFD) for i, n in enumerate(lengths) if n & IN_MEMFD]
        if not fds or len(fds) < len(wanted):
            if fds is not None:
                self.transport.drop_received_fds()  # type: ignore[attr-defined]
            raise FdProtocolError(f"a frame declares {len(wanted)} memfds, {len(fds or ())} came with it")
        taken = fds[: len(wanted)]
        del fds[: len(wanted)]
        mapped: dict[int, Any] = {}
        try:
            for k, (i, size) in enumerate(wanted):
                mapped[i] = memfd.receive(taken[k], size)  # owns the fd from here, even when it raises
        except BaseException:
            memfd.close_all(taken[len(mapped) + 1 :])
            raise
        return mapped

    def _unclaimed_fds(self) -> None:
        """Every byte that came with them is read, and no frame declared them."""
        self.transport.drop_received_fds()  # type: ignore[attr-defined]
        raise FdProtocolError("file descriptors came with a frame that declares none")

    def has_bytes(self) -> bool:
        return self._end > self._start

    def receive_available(self, nowait_flag: int) -> bool:
        """Take what has arrived without waiting (a socket transport; ``nowait_flag`` is
        ``MSG_DONTWAIT``); whether a whole frame is buffered, or the stream ended."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == _READ_CHUNK:
            return self.has_frame()  # full: let read_frame make room
        try:
            if self._recvmsg_into is not None:  # inline, as in _fill
                got, ancillary, msg_flags, _ = self._recvmsg_into(
                    (self._view[self._end :],), self._ancillary_size, nowait_flag | _CMSG_CLOEXEC
                )
                if ancillary or msg_flags & _CTRUNC:
                    self.transport.take_fds(ancillary, msg_flags)  # type: ignore[attr-defined]
            else:
                got = self.transport.recv_into(self._view[self._end :], 0, nowait_flag)  # type: ignore[call-arg]
        except BlockingIOError:
            return False
        if not got:
            return True  # end of stream: read_frame says so
        self._end += got
        return self.has_frame()

    def has_frame(self) -> bool:
        """Whether the buffer already holds a whole frame."""
        have = self._end - self._start
        if have < HEADER.size:
            return False
        plen, _, _, nbuf, *_ = HEADER.unpack_from(self._buf, self._start)
        need = HEADER.size + 8 * nbuf + plen
        if have < need:
            return False
        if nbuf:
            for n in struct.unpack_from(f"<{nbuf}Q", self._buf, self._start + HEADER.size):
                if not n & IN_MEMFD:
                    need += n
        return have >= need

    def _fill(self, need: int, eof_ok: bool = False) -> bool:
        """Make ``need`` bytes available at ``_start`` (need <= chunk size)."""
        if self._end - self._start >= need:
            return True
        if self._start:
            kept = self._end - self._start
            self._buf[:kept] = self._buf[self._start : self._end]
            self._start, self._end = 0, kept
        while self._end < need:
            if self._recvmsg_into is not None:  # inline: a call less per read on the hot path
                got, ancillary, msg_flags, _ = self._recvmsg_into(
                    (self._view[self._end :],), self._ancillary_size, _CMSG_CLOEXEC
                )
                if ancillary or msg_flags & _CTRUNC:
                    self.transport.take_fds(ancillary, msg_flags)  # type: ignore[attr-defined]
            else:
                got = self.transport.recv_into(self._view[self._end :])
            if not got:
                if eof_ok and self._end == 0:
                    return False
                raise EOFError("connection closed in the middle of a frame")
            self._end += got
        return True

    def _read_exact(self, size: int, into: Any) -> memoryview:
        if into is None and size <= _READ_CHUNK:
            self._fill(size)
            view = self._view[self._start : self._start + size]
            self._start += size
            return view
        target = memoryview(into if into is not None else bytearray(size)).cast("B")
        have = min(size, self._end - self._start)
        target[:have] = self._view[self._start : self._start + have]
        self._start += have
        while have < size:
            got = self.transport.recv_into(target[have:])
            if not got:
                raise EOFError("connection closed in the middle of a frame")
            have += got
        return target
