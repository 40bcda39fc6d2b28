"""The driver's side of ``pmap``'s batch protocol (``docs/protocol.md``).

The mapped function goes once per link (DEFINE_FUNCTION, under an id of this
map), then each batch names it (CALL_BATCH) and its outcome lands in the waiter
the caller gave. A worker's second batch and later ones are corked, so one
write carries them: an idle worker's first batch goes out at once.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

from ..links.connection import Connection, ConnectionClosed
from ..wire import memfd
from . import cluster, peers
from .cluster import PGRP
from .messages import MsgType

_ids = itertools.count(1)


class BatchSender:
    """Sends one map's batches; :meth:`flush` after each round of :meth:`send` calls."""

    def __init__(self, f: Any, star: bool) -> None:
        self.f = f
        self.star = star
        self.fid = (PGRP.myid << 40) | next(_ids)
        self._defined: set[int] = set()
        self._corked: list[Connection] = []
        self._once = memfd.OneCopy()  # a large array in f (a closure's, a partial's): one memfd for all here

    def send(self, pid: int, items: list[Any], waiter: Any, more_in_flight: bool) -> None:
        """Start ``items`` on ``pid``; ``waiter.set(outcome, failed)`` gets run_batch's outcome.

        Raises ``ProcessExitedException`` or ``ConnectionClosed`` if the batch was not sent
        (the worker is gone; nobody will settle the waiter). Once sent, a link that ends
        settles the waiter with its failure.
        """
        conn = peers.connection_to(pid)
        # All of one worker's batches sent first would delay the next worker's start
        # whenever the woken worker takes this CPU (it may, over a Unix socket).
        if more_in_flight and not conn.corked_by_me():
            conn.cork()
            self._corked.append(conn)
        if pid not in self._defined:  # the function goes once per link, pickled for that pid
            with self._once:
                cluster.send_obj(conn, (self.fid, self.f), functools.partial(conn.send_frame, MsgType.DEFINE_FUNCTION))
            self._defined.add(pid)
        wid = PGRP.next_waiter_id()
        conn.waiters[wid] = waiter
        send = functools.partial(_send_batch, conn, response=(PGRP.myid, wid), notify=(int(self.star), self.fid))
        try:
            cluster.send_obj(conn, items, send)
        except ConnectionClosed:
            if conn.waiters.pop(wid, None) is not None:
                raise  # not sent, and nobody will settle it
            # the link's end already failed this batch: that failure settles it
        if conn.closed:
            peers.link_lost(conn)

    def flush(self) -> None:
        """Write what :meth:`send` corked; a link that fails here fails its batches."""
        corked, self._corked = self._corked, []
        for conn in corked:
            try:
                conn.uncork()
            except ConnectionClosed as exc:
                peers.link_lost(conn, str(exc))


def _send_batch(conn: Connection, payload: bytes, buffers: list[Any], response: Any, notify: Any) -> None:
    conn.send_frame(MsgType.CALL_BATCH, payload, buffers, response=response, notify=notify)
