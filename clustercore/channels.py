"""Channels: the local ``Channel`` and ``RemoteChannel``, a channel living on one process.

A ``RemoteChannel`` is a remote reference whose storage on the owner is a
``Channel`` (made there by ``factory()``). Every operation runs on the owner,
on a thread of its own, so a ``put`` that waits for room or a ``take`` that
waits for an item never stalls the owner's other calls.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .engine.callrunner import internal
from .engine.cluster import PGRP
from .engine.refs import RRID, lookup_ref, next_rrid
from .engine.remoterefs import AbstractRemoteRef, check_owner
from .engine.requests import call_fetch_async
from .errors import InvalidStateError
from .wire.serialize import register_plain_type


class Channel:
    """A thread-safe FIFO of at most ``size`` items (``0``: unbuffered; ``math.inf``: unbounded)."""

    def __init__(self, size: int | float = 0) -> None:
        if isinstance(size, bool) or not (isinstance(size, int) or size == math.inf) or size < 0:
            raise ValueError(f"a Channel's size is a non-negative int or math.inf, not {size!r}")
        self.size = size
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._puts = 0  # unbuffered channels: a put returns once its item was taken
        self._takes = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Channel(size={self.size}, {len(self._items)} items, {state})"

    def put(self, value: Any) -> Any:
        """Add ``value``, waiting while the channel is full; returns ``value``."""
        with self._cond:
            self._check_open()
            while self.size and len(self._items) >= self.size:
                self._cond.wait()
                self._check_open()
            self._items.append(value)
            self._puts += 1
            ticket = self._puts
            self._cond.notify_all()
            while not self.size and self._takes < ticket:  # unbuffered: hand it over
                if self._closed:
                    break
                self._cond.wait()
        return value

    def take(self) -> Any:
        """Remove and return the first item, waiting for one."""
        with self._cond:
            self._wait_for_item(None)
            value = self._items.popleft()
            self._takes += 1
            self._cond.notify_all()
            return value

    def fetch(self) -> Any:
        """The first item, waiting for one, without removing it."""
        with self._cond:
            self._wait_for_item(None)
            return self._items[0]

    def isready(self) -> bool:
        return bool(self._items)

    def wait(self, timeout: float | None = None) -> Channel:
        """Wait until an item is there; ``TimeoutError`` after ``timeout`` seconds."""
        with self._cond:
            self._wait_for_item(timeout)
        return self

    def close(self) -> None:
        """No more puts; takers drain what is left, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def isopen(self) -> bool:
        return not self._closed

    def __iter__(self) -> Iterator[Any]:
        return _drain(self.take)

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError("the channel is closed")

    def _wait_for_item(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._items:
            if self._closed:
                raise InvalidStateError("the channel is closed and empty")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"no item within {timeout:g} s")
            self._cond.wait(left)


def _drain(take: Callable[[], Any]) -> Iterator[Any]:
    """Take items until the channel is closed and empty."""
    while True:
        try:
            yield take()
        except InvalidStateError:
            return


def _default_channel() -> Channel:
    return Channel(1)


class RemoteChannel(AbstractRemoteRef):
    """A channel living on process ``pid`` (default: this one), usable from any process.

    ``RemoteChannel(pid)`` holds one item; ``RemoteChannel(factory, pid)`` runs
    ``factory()`` on ``pid`` to make the channel (e.g. ``lambda: Channel(10)``).
    """

    __slots__ = ()

    def __init__(self, factory: Callable[[], Any] | int | None = None, pid: int | None = None) -> None:
        if factory is not None and not callable(factory):
            factory, pid = None, factory  # RemoteChannel(pid)
        where = check_owner(pid)
        rrid = next_rrid()
        make = factory or _default_channel
        if where == PGRP.myid:
            _make_channel(rrid, make)
        else:
            call_fetch_async(where, _make_channel, (rrid, make), {}).result()
        self._init(where, rrid, counted=True)

    def __repr__(self) -> str:
        return f"RemoteChannel(where={self.where}, whence={self.whence}, id={self.id})"

    def _on_owner(self, op: Callable[..., Any], *args: Any) -> Any:
        return self.on_owner(op, *args, passes=(InvalidStateError, TimeoutError))

    def put(self, value: Any) -> RemoteChannel:
        self._on_owner(_channel_put, value)
        return self

    def take(self) -> Any:
        return self._on_owner(_channel_take)

    def fetch(self) -> Any:
        return self._on_owner(_channel_fetch)

    def isready(self) -> bool:
        return bool(self._on_owner(_channel_isready))

    def wait(self, timeout: float | None = None) -> RemoteChannel:
        self._on_owner(_channel_wait, timeout)
        return self

    def close(self) -> None:
        self._on_owner(_channel_close)

    def __iter__(self) -> Iterator[Any]:
        return _drain(self.take)


register_plain_type(RemoteChannel)  # pickles to its class and ids


def channel_from_id(rrid: RRID) -> Any:
    """The channel behind a RemoteChannel; valid only on the process that owns it."""
    rv = PGRP.refs.get(RRID(*rrid))
    if rv is None:
        raise ValueError(f"no channel {tuple(rrid)} is stored on pid {PGRP.myid} (only its owner has it)")
    return rv.store


@internal
def _make_channel(rrid: RRID, factory: Callable[[], Any]) -> None:
    lookup_ref(rrid, factory)


def _store(rrid: RRID) -> Any:
    return channel_from_id(rrid)


@internal
def _channel_put(rrid: RRID, value: Any) -> None:
    _store(rrid).put(value)


@internal
def _channel_take(rrid: RRID) -> Any:
    return _store(rrid).take()


@internal
def _channel_fetch(rrid: RRID) -> Any:
    return _store(rrid).fetch()


@internal
def _channel_isready(rrid: RRID) -> bool:
    return bool(_store(rrid).isready())


@internal
def _channel_wait(rrid: RRID, timeout: float | None) -> None:
    _store(rrid).wait(timeout)


@internal
def _channel_close(rrid: RRID) -> None:
    _store(rrid).close()
