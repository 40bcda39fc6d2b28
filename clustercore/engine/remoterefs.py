"""Remote references and their distributed garbage collection.

A reference is named by an :class:`RRID` ``(whence, id)``: the pid that made
it and a counter there. Its value lives on the owner (``where``) in
``PGRP.refs``, with a count of references per client pid. Counts move by
messages that may arrive in any order across links, so they are signed and
the value is freed only when every count is back to zero:

* the maker of a reference holds one count from the start;
* sending a reference to pid ``d`` adds one for ``d`` (done by the sender: at
  once if it owns the reference, else queued to the owner before any later
  release of its own); the owner receiving its own reference counts it locally;
* a process holds one local object per reference: a second copy received
  cancels the sender's count, and the object's death releases one;
* a fetched Future keeps its value and releases its count at once.

Releases from ``__del__`` go through a re-entrant queue to a flusher thread,
which applies local ones and batches remote ones into GC frames that precede
the next message to the owner.
"""

from __future__ import annotations

import queue
import sys
import threading
import weakref
from collections.abc import Generator
from typing import Any

from ..errors import RemoteException
from . import cluster, peers
from .callrunner import internal
from .cluster import PGRP, SERIAL_CTX, Waiter
from .refs import RRID, add_client, lookup_ref, next_rrid
from .requests import call_fetch_async

_UNSET: Any = object()


# --- queued count changes --------------------------------------------------------------

_GC_QUEUE: queue.SimpleQueue[tuple[int, RRID, int, int]] = queue.SimpleQueue()
_GC_DOORBELL: queue.SimpleQueue[None] = queue.SimpleQueue()  # wakes the flusher; items stay queued
_flush_lock = threading.Lock()
_flusher_lock = threading.Lock()
_flusher: threading.Thread | None = None


def _queue_gc(owner: int, rrid: RRID, pid: int, delta: int) -> None:
    """Re-entrant (safe in ``__del__``): queue a count change for the owner.

    It starts no thread: the flusher is started when the first reference is made.
    """
    _GC_QUEUE.put((owner, rrid, pid, delta))
    _GC_DOORBELL.put(None)


def _start_flusher() -> None:
    global _flusher
    with _flusher_lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_forever, name="clustercore-gc", daemon=True)
            _flusher.start()


def _flush_forever() -> None:
    while True:
        _GC_DOORBELL.get()
        flush_gc()


def flush_gc() -> None:
    """Apply or send every queued count change now; once it returns, each change
    queued before the call is applied here or travels ahead of the next message
    to its owner."""
    touched: set[int] = set()
    with _flush_lock:
        while True:
            try:
                owner, rrid, pid, delta = _GC_QUEUE.get_nowait()
            except queue.Empty:
                break
            if owner == PGRP.myid:
                add_client(rrid, pid, delta)
                continue
            with PGRP.lock:
                w = cluster.lookup_worker(owner)
                if w is not None:
                    w.gc_ops.append((rrid.whence, rrid.id, pid, delta))
                    touched.add(owner)
        for owner in touched:
            _send_gc_now(owner)


def _send_gc_now(owner: int) -> None:
    with PGRP.lock:
        w = PGRP.workers.get(owner)
    if w is None or not w.gc_ops:
        return
    try:
        peers.connection_to(owner).flush()
    except Exception:  # noqa: BLE001 - the owner is gone, and its table with it
        with PGRP.lock:
            w.gc_ops.clear()


# --- the client's side -----------------------------------------------------------------

_local_refs: weakref.WeakValueDictionary[RRID, AbstractRemoteRef] = weakref.WeakValueDictionary()


def _on_serialize(rrid: RRID, where: int) -> None:
    dest = SERIAL_CTX.dest
    if not dest or dest == where:
        return  # going to the owner, which counts it when it arrives
    if where == PGRP.myid:
        add_client(rrid, dest, +1)
    else:
        _queue_gc(where, rrid, dest, +1)


class AbstractRemoteRef:
    """A reference to storage on process ``where``, counted there while it lives here."""

    __slots__ = ("__weakref__", "_counted", "id", "whence", "where")

    def _init(self, where: int, rrid: RRID, counted: bool) -> None:
        self.where = where
        self.whence, self.id = rrid
        self._counted = counted
        _local_refs[rrid] = self
        if _flusher is None:
            _start_flusher()

    @classmethod
    def _new(cls, where: int, rrid: RRID | None = None, counted: bool = True) -> Any:
        ref = cls.__new__(cls)
        ref._init(where, rrid or next_rrid(), counted)
        return ref

    @property
    def rrid(self) -> RRID:
        return RRID(self.whence, self.id)

    def __del__(self, _finalizing: Any = sys.is_finalizing) -> None:  # bound now: globals go at exit
        if getattr(self, "_counted", False) and not _finalizing():
            self._counted = False
            try:
                _queue_gc(self.where, RRID(self.whence, self.id), PGRP.myid, -1)
            except Exception:  # noqa: BLE001 - interpreter shutdown: the module is half gone
                pass

    def _release(self) -> None:
        """This process no longer needs the owner to keep the storage."""
        if self._counted:
            self._counted = False
            _queue_gc(self.where, self.rrid, PGRP.myid, -1)

    def __reduce__(self) -> Any:
        _on_serialize(self.rrid, self.where)
        return _rebuild_ref, (type(self), self.where, self.whence, self.id)

    def on_owner(self, op: Any, *args: Any, passes: tuple[type[BaseException], ...] = ()) -> Any:
        """``op(rrid, *args)`` on the owner; its exceptions of the ``passes`` types are raised here as they are."""
        if self.where == PGRP.myid:
            return op(self.rrid, *args)
        try:
            return call_fetch_async(self.where, op, (self.rrid, *args), {}).result()
        except RemoteException as exc:
            if isinstance(exc.captured.ex, passes):
                raise exc.captured.ex from exc
            raise


def _rebuild_ref(cls: type[AbstractRemoteRef], where: int, whence: int, rid: int) -> Any:
    rrid = RRID(whence, rid)
    me = PGRP.myid
    existing = _local_refs.get(rrid)
    if existing is not None:
        if where != me:
            _queue_gc(where, rrid, me, -1)  # we already hold a count: cancel the sender's
        return existing
    if where == me:
        add_client(rrid, me, +1)
    return cls._new(where, rrid, counted=True)


def check_owner(pid: int | None) -> int:
    where = PGRP.myid if pid is None else cluster.check_pid(pid)
    if where != PGRP.myid:
        cluster.worker_from_id(where)
    return where


class Future(AbstractRemoteRef):
    """A write-once remote reference (Julia's ``Future``)."""

    __slots__ = ("_ready", "_value")

    def __init__(self, pid: int | None = None) -> None:
        self._init(check_owner(pid), next_rrid(), counted=True)

    def _init(self, where: int, rrid: RRID, counted: bool, value: Any = _UNSET) -> None:
        self._value = value
        self._ready = False  # a wait saw the value there (without fetching it)
        super()._init(where, rrid, counted)

    @classmethod
    def _made_for_call(cls, where: int) -> Future:
        return cls._new(where)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        state = "ready" if self._ready or self._value is not _UNSET else "pending"
        return f"Future(where={self.where}, whence={self.whence}, id={self.id}, {state})"

    # --- the user API -------------------------------------------------------------

    def fetch(self) -> Any:
        """The value, waiting for it; cached here after the first fetch."""
        if self._value is _UNSET:
            value, failed = self._fetch_outcome()
            if self._value is _UNSET:
                self._value = (value, failed)
            self._release()
        value, failed = self._value
        if failed:
            raise value
        return value

    def _fetch_outcome(self) -> tuple[Any, bool]:
        if self.where == PGRP.myid:
            return _fetch_ref(self.rrid)
        return _call_on_owner(self, _fetch_ref, self.rrid).result()  # type: ignore[no-any-return]

    def isready(self) -> bool:
        """Whether a value is there; never waits for it."""
        if self._value is not _UNSET:
            return True
        if self.where == PGRP.myid:
            return bool(lookup_ref(self.rrid).store.done)
        return bool(_call_on_owner(self, _isready_ref, self.rrid).result())

    def wait(self, timeout: float | None = None) -> Future:
        """Wait until a value is there; ``TimeoutError`` after ``timeout`` seconds.

        A Future set by a call that failed raises that call's ``RemoteException``
        (Julia's ``wait_ref``).
        """
        if self._value is not _UNSET:
            if self._value[1]:
                raise self._value[0]
            return self
        if self.where == PGRP.myid:
            ready, error = _wait_ref(self.rrid, timeout)
        else:
            ready, error = _call_on_owner(self, _wait_ref, self.rrid, timeout).result()
        if not ready:
            raise TimeoutError(f"{self!r} was not ready within {timeout:g} s")
        self._ready = True
        if error is not None:
            raise error
        return self

    def put(self, value: Any) -> Future:
        """Set the value; a Future can be set only once."""
        if self._value is not _UNSET:
            raise RuntimeError("a Future can be set only once")
        if self.where == PGRP.myid:
            ok = _put_ref(self.rrid, value)
        else:
            ok = _call_on_owner(self, _put_ref, self.rrid, value).result()
        if not ok:
            raise RuntimeError("a Future can be set only once")
        self._value = (value, False)
        return self

    def __await__(self) -> Generator[Any, None, Any]:
        return self._fetch_async().__await__()

    async def _fetch_async(self) -> Any:
        """``fetch`` for asyncio: no thread waits, so cancelling the await frees everything here."""
        if self._value is _UNSET:
            if self.where == PGRP.myid:
                store = await _completion(lookup_ref(self.rrid).store)
                outcome = (store.value, store.failed)
            else:
                outcome = (await _completion(_call_on_owner(self, _fetch_ref, self.rrid))).result()
            if self._value is _UNSET:
                self._value = outcome
            self._release()
        return self.fetch()

    def __reduce__(self) -> Any:
        if self._value is not _UNSET:  # the value travels; no count is needed
            return _rebuild_fetched_future, (self.where, self.whence, self.id, self._value)
        return super().__reduce__()


def _rebuild_fetched_future(where: int, whence: int, rid: int, value: Any) -> Future:
    rrid = RRID(whence, rid)
    existing = _local_refs.get(rrid)
    if isinstance(existing, Future):
        if existing._value is _UNSET:
            existing._value = value
        return existing
    fut = Future.__new__(Future)
    fut._init(where, rrid, counted=False, value=value)
    return fut


# --- what owners run for remote holders -------------------------------------------------


@internal
def _fetch_ref(rrid: RRID) -> tuple[Any, bool]:
    store = lookup_ref(rrid).store
    store.wait()
    return store.value, store.failed


@internal
def _isready_ref(rrid: RRID) -> bool:
    return bool(lookup_ref(rrid).store.done)


@internal
def _wait_ref(rrid: RRID, timeout: float | None) -> tuple[bool, BaseException | None]:
    """Whether the value came within ``timeout``, and the call's error if it failed."""
    store = lookup_ref(rrid).store
    if not store.wait(timeout):
        return False, None
    return True, store.value if store.failed else None


@internal
def _put_ref(rrid: RRID, value: Any) -> bool:
    return bool(lookup_ref(rrid).store.set(value))


def _call_on_owner(ref: Future, fn: Any, *args: Any) -> Waiter:

    return call_fetch_async(ref.where, fn, args, {})


async def _completion(waiter: Waiter) -> Waiter:
    """``waiter`` once it is set, awaited in asyncio without a thread blocked on it."""
    import asyncio

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake(_: Waiter) -> None:
        if not done.done():
            done.set_result(None)

    def on_set(w: Waiter) -> None:  # in whichever thread set the waiter
        try:
            loop.call_soon_threadsafe(wake, w)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    waiter.add_done_callback(on_set)
    await done
    return waiter


def remoteref_id(ref: Any) -> RRID:
    """The :class:`RRID` of a Future or RemoteChannel."""
    return RRID(ref.whence, ref.id)
