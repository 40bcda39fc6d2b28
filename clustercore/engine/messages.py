"""Message types of the cluster protocol (Julia's ``messages.jl``).

Each message is one frame (see :mod:`clustercore.wire.framing`); the frame
header carries the type and the response/notify reference ids, the payload
is a pickle whose shape depends on the type:

================  =======================================  ===========================
type              payload                                  header ids
================  =======================================  ===========================
CALL              (f, args, kwargs)                        response: the Future's RRID
CALL_FETCH        (f, args, kwargs)                        response: caller's waiter id
CALL_WAIT         (f, args, kwargs)                        response: Future, notify: waiter
REMOTE_DO         (f, args, kwargs)                        -
RESULT            value (flag ERROR: an exception)         response: the waiter id
IDENTIFY_SOCKET   sender pid                               -
IDENTIFY_ACK      None                                     -
JOIN_PGRP         JoinPGRP                                 -
JOIN_COMPLETE     JoinComplete                             -
GC                [(whence, id, pid, delta), ...]          -
INTERRUPT         None                                     -
DEFINE_FUNCTION   (function id, f)                         -
CALL_BATCH        [x, ...] (f(x) each; f(*x) if star)      response: waiter, notify: (star, function id)
================  =======================================  ===========================

CALL_BATCH answers with RESULT ``(values, {position: RemoteException})``; it is
how ``pmap`` runs elements with a function sent once per link.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

from ..wire.serialize import register_plain_type


class MsgType(IntEnum):
    CALL = 1
    CALL_FETCH = 2
    CALL_WAIT = 3
    REMOTE_DO = 4
    RESULT = 5
    IDENTIFY_SOCKET = 6
    IDENTIFY_ACK = 7
    JOIN_PGRP = 8
    JOIN_COMPLETE = 9
    GC = 10
    INTERRUPT = 11
    DEFINE_FUNCTION = 12
    CALL_BATCH = 13


class _Record:
    """A small message body: attributes by keyword or position, compared and shown by value
    (a dataclass, without importing :mod:`dataclasses` into every worker)."""

    __slots__: tuple[str, ...] = ()
    _fields: tuple[str, ...] = ()  # in constructor order

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__} takes {len(self._fields)} fields, not {len(args)}")
        for name, value in zip(self._fields, args, strict=False):
            setattr(self, name, value)
        for name, value in kwargs.items():
            if name not in self._fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)
        for name in self._fields[len(args) :]:
            if name not in kwargs:
                setattr(self, name, self._default(name))

    def _default(self, name: str) -> Any:
        raise TypeError(f"{type(self).__name__} needs {name!r}")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # by position: no copyreg slot-name lookup, which a freshly forked worker would do
        # (and cache) for each message type it sends
        return type(self), tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({fields})"


@register_plain_type
class PeerInfo(_Record):
    """What a process needs to reach another worker."""

    _fields = ("pid", "connect_at", "hostname", "local_address")
    __slots__ = _fields
    pid: int
    connect_at: Any
    hostname: str
    local_address: str  # the worker's abstract Unix socket ("" if none): same-host peers dial it

    def _default(self, name: str) -> Any:
        return "" if name in ("hostname", "local_address") else super()._default(name)


@register_plain_type
class PeerTable:
    """Many :class:`PeerInfo`, pickled once by pid 1 for every worker it tells, and kept as
    bytes by each until it needs one of them: all-to-all, a cluster of n workers tells each
    of every other, and making n records in each of n workers at once was most of the time
    ``addprocs(1024)`` took. A worker that only answers pid 1 never reads it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def of(cls, peers: Iterable[PeerInfo]) -> PeerTable:
        rows = [(p.pid, p.connect_at, p.hostname, p.local_address) for p in peers]
        # Compressed: rows differ in a few bytes (a local address is mostly this host's
        # key), and pid 1 sends the table to every worker: 1,024 rows 102 -> 20 KiB.
        return cls(zlib.compress(pickle.dumps(rows, protocol=5), 1))

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return PeerTable, (self.data,)  # unpickled as the same bytes: read later, by read()

    def read(self) -> list[PeerInfo]:
        inflate = zlib.decompressobj()
        rows = inflate.decompress(self.data, _TABLE_MAX)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError(f"a table of peers larger than {_TABLE_MAX} bytes, or cut short")
        return [PeerInfo(*row) for row in pickle.loads(rows)]


_TABLE_MAX = 1 << 27  # 128 MiB of rows: a million peers; a larger table is refused, not inflated


@register_plain_type
class JoinPGRP(_Record):
    """From pid 1 to a new worker: its pid and the cluster it joins."""

    _fields = (
        "self_pid",
        "peers",
        "connect_now",
        "topology",
        "lazy",
        "enable_threaded_blas",
        "driver_hostname",
        "environ",
    )
    __slots__ = _fields
    self_pid: int
    peers: list[PeerInfo] | PeerTable
    connect_now: list[int]
    topology: str
    lazy: bool
    enable_threaded_blas: bool
    driver_hostname: str
    environ: dict[str, str]

    def _default(self, name: str) -> Any:
        return {} if name == "environ" else super()._default(name)


@register_plain_type
class JoinComplete(_Record):
    """From a worker to pid 1 once it has joined."""

    _fields = ("cpu_threads", "ospid", "hostname", "local_address")
    __slots__ = _fields
    cpu_threads: int
    ospid: int
    hostname: str
    local_address: str

    def _default(self, name: str) -> Any:
        return "" if name == "local_address" else super()._default(name)
