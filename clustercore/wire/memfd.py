"""Anonymous shared memory for a frame's large buffers on one host (Linux ``memfd``).

Over a Unix socket a buffer of ``MEMFD_MIN`` bytes or more travels as a file
descriptor (``SCM_RIGHTS``), not as bytes: the sender copies it once into a
``memfd`` and seals it (no write, shrink or grow, ever again), the receiver
checks what it got and maps it copy-on-write, so its array is its own to
change and the sender's later changes to its buffer are never seen. A
received buffer sent on unchanged (an echo, a result handed on to another
process) sends the same memfd again, with no copy at all.

A memfd has no name in any file system: its memory goes when the last process
holding it (an fd, a mapping, a message in flight) does, also when that
process is killed. Nothing is ever written to ``/dev/shm`` or to disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import stat
import struct
import sys
import threading
import weakref
from collections import OrderedDict
from typing import Any

from .transport import FdProtocolError

SUPPORTED = sys.platform == "linux" and hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")
# CLUSTERCORE_MEMFD=0: send large buffers as bytes (a custom manager's Unix socket that is a forwarder,
# which cannot pass file descriptors on). Read when this module loads; a worker inherits it.
SENDS = SUPPORTED and os.environ.get("CLUSTERCORE_MEMFD", "1") != "0"
MEMFD_MIN = 512 << 10  # smaller buffers go through the socket: a memfd costs more (measured: 256 KiB)
MAX_FDS = 64  # memfds in one frame; more closes the link
_WRITE_CHUNK = 1 << 30  # pwrite takes at most ~2 GiB at once

if SUPPORTED:
    _SEALED = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    _SEAL_ALL = _SEALED | fcntl.F_SEAL_SEAL


class Mapping:
    """A received memfd mapped copy-on-write (``MAP_PRIVATE``). Its ``buffer`` (a ctypes
    array: what numpy maps) is the only strong reference; the mapping is unmapped when the
    buffer goes. It holds no fd of its own (it is mapped through libc's ``mmap``, where
    ``mmap.mmap`` would keep a duplicate for each); ``fd`` is the memfd while this process
    keeps it to send the buffer on without a copy (``KEPT_FDS`` at most), else -1."""

    __slots__ = ("address", "fd", "ref", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.address, self.size, self.fd = _map_private(fd, size), size, -1

    def make_buffer(self) -> Any:
        import ctypes  # loaded already: _map_private uses it

        buffer = (ctypes.c_char * self.size).from_address(self.address)
        weakref.finalize(buffer, _libc().munmap, self.address, self.size)
        self.ref = weakref.ref(buffer)
        return buffer


def _map_private(fd: int, size: int) -> int:
    import ctypes

    address = _libc().mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if address is None or address == _MAP_FAILED:
        raise OSError(ctypes.get_errno(), "cannot map a received memfd")
    return address  # type: ignore[no-any-return]


KEPT_FDS = 64  # received memfds kept open to send on without a copy; older ones are let go
_owners: dict[int, Mapping] = {}  # id(mapping.buffer) -> mapping, while it lives
_kept: OrderedDict[int, int] = OrderedDict()  # id(mapping.buffer) -> fd kept for it, oldest first
_pinned: dict[int, int] = {}  # the same for shared buffers: kept while they live
_lock = threading.Lock()
_MAP_FAILED = (1 << (8 * struct.calcsize("P"))) - 1  # (void *) -1
_libc_handle: list[Any] = []


def _libc() -> Any:
    if not _libc_handle:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc_handle.append(libc)
    return _libc_handle[0]


def kept_fds() -> int:
    """How many memfds this process keeps open for live buffers: received ones (at most
    ``KEPT_FDS``) and shared ones (:func:`share`)."""
    return len(_kept) + len(_pinned)


def create(data: Any) -> int:
    """A new sealed memfd holding a copy of ``data`` (a contiguous buffer); the caller owns it."""
    view = memoryview(data).cast("B")
    fd = os.memfd_create("clustercore", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        size = view.nbytes
        os.ftruncate(fd, size)
        done = 0
        while done < size:
            done += os.pwrite(fd, view[done : done + _WRITE_CHUNK], done)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEAL_ALL)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_for(data: Any) -> int:
    """A sealed memfd holding ``data``'s bytes, owned by the caller: the memfd ``data``
    was received in (or :func:`share` made) if it covers that mapping whole and no page of
    it was written; the one a :class:`OneCopy` in force made for it; else a new copy."""
    mapping = _received_mapping(data)
    if mapping is not None:
        with _lock:  # not let go meanwhile
            if mapping.fd >= 0:
                return os.dup(mapping.fd)
    scopes = _in_force.__dict__.get("scopes")
    if scopes:
        return scopes[-1].fd_for(data)
    return create(data)


class OneCopy:
    """While entered (``with``, on each thread that sends), a buffer sent to several peers is
    copied into a memfd once: the same buffer object sent again goes as the same memfd, which
    every receiver maps copy-on-write. For one snapshot of a value sent to many (the values
    ``everywhere`` binds, a ``pmap``'s function and elements). :meth:`close` (or dropping it)
    lets the memfds go; receivers keep what they mapped."""

    def __init__(self) -> None:
        self._made: dict[tuple[int, int], tuple[Any, int]] = {}  # (id(exporter), size) -> (exporter, fd)
        self._lock = threading.Lock()

    def __enter__(self) -> OneCopy:
        _in_force.__dict__.setdefault("scopes", []).append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _in_force.scopes.pop()

    def fd_for(self, data: Any) -> int:
        view = memoryview(data)
        key = (id(view.obj), view.nbytes)
        with self._lock:
            made = self._made.get(key)
            if made is not None:
                return os.dup(made[1])
        fd = create(data)
        with self._lock:
            if key in self._made:  # another thread made one meanwhile: use it
                os.close(fd)
            else:
                self._made[key] = (view.obj, fd)  # the exporter stays: its id names it
            return os.dup(self._made[key][1])

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, {}
        close_all([fd for _, fd in made.values()])

    __del__ = close


_in_force = threading.local()


def share(data: Any) -> Any:
    """A copy of ``data`` (a contiguous buffer) in a new sealed memfd that this process maps
    and keeps for as long as the returned buffer lives: every send of it, to any number of
    processes on this host, passes the same memfd."""
    fd = create(data)
    try:
        mapping = Mapping(fd, memoryview(data).nbytes)
    except BaseException:
        os.close(fd)
        raise
    buffer = mapping.make_buffer()
    _keep(mapping, buffer, fd, pinned=True)
    return buffer


def receive(fd: int, size: int) -> Any:
    """Check that ``fd`` (received from a peer, now owned here) is a memfd of ``size`` bytes
    sealed against any change, and map it copy-on-write: the buffer to use. Raises :class:`FdProtocolError`
    (having closed ``fd``) otherwise."""
    try:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            raise FdProtocolError("a file descriptor that is not a memfd") from None
        if seals & _SEALED != _SEALED:
            try:  # sealed here before its size is read: its sender can no longer change it, so
                # the size read next is the size mapped (a shrink in between would make the
                # first touch of the mapping a SIGBUS)
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALED)
            except OSError as exc:
                raise FdProtocolError(f"a memfd that cannot be sealed: {exc}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            raise FdProtocolError(f"a memfd of {info.st_size} bytes where the frame says {size}")
        try:
            mapping: Mapping | None = Mapping(fd, size)
        except OSError:  # not mappable here (no address space or commit left, an empty file)
            mapping = None
    except BaseException:
        os.close(fd)
        raise
    if mapping is None:
        return _read_whole(fd, size)  # a copy, rather than losing the link
    buffer = mapping.make_buffer()
    _keep(mapping, buffer, fd)
    return buffer


def _read_whole(fd: int, size: int) -> bytearray:
    """The contents of a sealed memfd of ``size`` bytes, copied; ``fd`` is closed."""
    try:
        data = bytearray(size)
        view, done = memoryview(data), 0
        while done < size:
            got = os.preadv(fd, [view[done : done + _WRITE_CHUNK]], done)
            if not got:
                raise FdProtocolError(f"a memfd that ended at {done} of its {size} bytes")
            done += got
        return data
    finally:
        os.close(fd)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _keep(mapping: Mapping, buffer: Any, fd: int, pinned: bool = False) -> None:
    """Keep ``fd`` while ``buffer`` lives, to send it on; let the oldest kept one go if too
    many (never a ``pinned`` one: a shared buffer's)."""
    key = id(buffer)
    with _lock:
        _owners[key] = mapping
        mapping.fd = fd
        (_pinned if pinned else _kept)[key] = fd
        if len(_kept) > KEPT_FDS:
            old, old_fd = _kept.popitem(last=False)
            _owners[old].fd = -1
            os.close(old_fd)
    weakref.finalize(buffer, _forget, key)


def fd_kept_for(buffer: Any) -> int:
    """The memfd this process keeps for a received ``buffer``, or -1."""
    mapping = _owners.get(id(buffer))
    return mapping.fd if mapping is not None and mapping.ref() is buffer else -1


def _forget(key: int) -> None:
    with _lock:
        _owners.pop(key, None)
        fd = _kept.pop(key, _pinned.pop(key, -1))
        if fd >= 0:
            os.close(fd)


def _received_mapping(data: Any) -> Mapping | None:
    """The received mapping ``data`` covers whole, if it still has its fd and none of its
    pages was written."""
    if not _kept and not _pinned:
        return None
    view = memoryview(data)
    owner: Any = view.obj
    for _ in range(8):  # numpy: array -> array -> memoryview -> the mapping's buffer
        mapping = _owners.get(id(owner))
        if mapping is not None and mapping.ref() is owner:
            break
        if owner is None:
            return None
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    else:
        return None
    # A contiguous view as long as the mapping, into it, is all of it.
    if mapping.fd < 0 or view.nbytes != mapping.size or not view.contiguous:
        return None
    return mapping if _unwritten(mapping.address, mapping.size) else None


_PAGE = mmap.PAGESIZE
_PRESENT, _SWAPPED, _FILE_PAGE = 1 << 63, 1 << 62, 1 << 61


def _unwritten(address: int, size: int) -> bool:
    """Whether no page of a private mapping at ``address`` was copied on write: each page is
    either not present or still the memfd's own (``/proc/self/pagemap``)."""
    first, last = address // _PAGE, (address + size - 1) // _PAGE
    try:
        pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            entries = os.pread(pagemap, 8 * (last - first + 1), 8 * first)
        finally:
            os.close(pagemap)
    except OSError:
        return False
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is what sends buffers this large
        return all(not (w & _SWAPPED or (w & _PRESENT and not w & _FILE_PAGE)) for w in memoryview(entries).cast("Q"))
    words: Any = np.frombuffer(entries, dtype="<u8")
    present_not_file = words & ~(words << 2) & _PRESENT  # bit 61 (file page) shifted onto bit 63
    return not ((words & _SWAPPED) | present_not_file).any()
