"""Remote references' ids and the owner's table of what they hold (see :mod:`.remoterefs`).

The bottom of remote references: what message handling needs to find and count a
reference's storage, with nothing that sends.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from ..wire.serialize import register_plain_type
from .cluster import PGRP, Waiter


class RRID(NamedTuple):
    """A remote reference's id: the pid that made it and a counter there."""

    whence: int
    id: int


register_plain_type(RRID)

_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


def next_rrid() -> RRID:
    with _ids_lock:
        return RRID(PGRP.myid, next(_ids))


# --- the owner's side ----------------------------------------------------------------


class RemoteValue:
    """The storage behind a reference on its owner, and its client counts."""

    __slots__ = ("clients", "store")

    def __init__(self, store: Any, whence: int) -> None:
        self.store = store
        self.clients: dict[int, int] = {whence: 1}


_refs_lock = threading.Lock()


def lookup_ref(rrid: RRID, make_store: Any = Waiter) -> RemoteValue:
    """The owner's entry for ``rrid``, made on first use (Julia's ``lookup_ref``)."""
    rv = PGRP.refs.get(rrid)
    if rv is None:
        with _refs_lock:
            rv = PGRP.refs.get(rrid)
            if rv is None:
                rv = PGRP.refs[rrid] = RemoteValue(make_store(), rrid.whence)
    return rv


def add_client(rrid: RRID, pid: int, delta: int) -> None:
    """Change ``pid``'s count on a reference this process owns; free it at all-zero."""
    with _refs_lock:
        rv = PGRP.refs.get(rrid)
        if rv is None:
            if delta > 0 and rrid.whence == pid:
                return
            rv = PGRP.refs[rrid] = RemoteValue(Waiter(), rrid.whence)
        count = rv.clients.get(pid, 0) + delta
        if count:
            rv.clients[pid] = count
        else:
            rv.clients.pop(pid, None)
        if not rv.clients:
            del PGRP.refs[rrid]


def apply_gc_ops(ops: list[tuple[int, int, int, int]]) -> None:
    for whence, rid, pid, delta in ops:
        add_client(RRID(whence, rid), pid, delta)
