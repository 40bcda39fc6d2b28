"""Worker pools (Julia's ``workerpool.jl``): sets of workers handed out one call at a time.

A ``WorkerPool``'s state (its workers and a channel of the free ones) lives on
the process that made it, behind a remote reference; a pool sent to another
process still refers to that same state. ``CachingPool`` also ships each
function once per worker and calls the worker's copy afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from .channels import Channel
from .engine import cluster
from .engine.callrunner import internal
from .engine.cluster import PGRP
from .engine.refs import RRID, lookup_ref, next_rrid
from .engine.remoterefs import AbstractRemoteRef
from .engine.requests import call_fetch_async, fetch_call
from .errors import InvalidStateError
from .wire.serialize import register_plain_type


class _PoolState:
    """The owner's side of a pool: its workers and the free ones, in order."""

    def __init__(self) -> None:
        self.workers: set[int] = set()
        self.free = Channel(float("inf"))
        self.lock = threading.Lock()
        self.is_default = False
        self.generation = 0  # counts changes of ``workers``

    def push(self, pid: int) -> None:
        with self.lock:
            self.workers.add(pid)
            self.generation += 1
        self.free.put(pid)

    def put(self, pid: int) -> None:
        with self.lock:
            if pid not in self.workers:
                return
        self.free.put(pid)

    def take(self) -> int:
        while True:
            with self.lock:
                alive = {p for p in self.workers if _alive(p)}
                if alive != self.workers:
                    self.workers = alive
                    self.generation += 1
                if not alive:
                    if self.is_default:
                        return 1  # no workers: pid 1 does the work, as in Julia
                    raise InvalidStateError("no active worker is left in the pool")
            pid = self.free.take()
            if pid in self.workers and _alive(pid):
                return pid

    def remove(self, pid: int) -> None:
        with self.lock:
            if pid in self.workers:
                self.workers.discard(pid)
                self.generation += 1


def _alive(pid: int) -> bool:
    if pid == PGRP.myid:
        return True
    try:
        cluster.worker_from_id(pid)
    except Exception:  # noqa: BLE001 - gone or unknown: not usable
        return False
    return True


@register_plain_type
class _PoolRef(AbstractRemoteRef):
    """The remote reference through which any process reaches a pool's state."""

    __slots__ = ()


class AbstractWorkerPool:
    """What a pool offers: ``push``, ``put``, ``take``, ``len(pool)``, ``isready``."""

    _clustercore_pool = True

    def push(self, pid: int) -> None:
        raise NotImplementedError

    def put(self, pid: int) -> None:
        raise NotImplementedError

    def take(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def isready(self) -> bool:
        raise NotImplementedError

    @property
    def workers(self) -> set[int]:
        raise NotImplementedError

    def wrap_function(self, f: Callable[..., Any], pid: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """What to send to ``pid`` to call ``f`` (``CachingPool`` sends a cached reference)."""
        return f, ()


class WorkerPool(AbstractWorkerPool):
    """A pool of worker pids; ``take`` waits for a free one."""

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self._ref = _PoolRef._new(PGRP.myid, next_rrid())
        lookup_ref(self._ref.rrid, _PoolState)
        for pid in pids:
            self.push(cluster.check_pid(pid))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(owner={self._ref.where}, workers={sorted(self.workers)})"

    def __reduce__(self) -> Any:
        return _rebuild_pool, (self._ref,)

    def _op(self, name: str, *args: Any) -> Any:
        return self._ref.on_owner(_pool_op, name, *args, passes=(InvalidStateError,))

    def push(self, pid: int) -> None:
        self._op("push", pid)

    def put(self, pid: int) -> None:
        self._op("put", pid)

    def take(self) -> int:
        return int(self._op("take"))

    def remove(self, pid: int) -> None:
        self._op("remove", pid)

    def __len__(self) -> int:
        return int(self._op("len"))

    def isready(self) -> bool:
        return bool(self._op("isready"))

    @property
    def workers(self) -> set[int]:
        return set(self._op("workers"))

    def members_since(self, generation: int) -> tuple[int, set[int]] | None:
        """``(generation, workers)`` if the members changed since ``generation``, else ``None``;
        also ``None`` for a pool owned by another process (asking would cost a round trip)."""
        if self._ref.where != PGRP.myid:
            return None
        entry = PGRP.refs.get(self._ref.rrid)
        if entry is None:  # freed: nothing to report
            return None
        state: _PoolState = entry.store
        with state.lock:
            if state.generation == generation:
                return None
            return state.generation, set(state.workers)


def _rebuild_pool(ref: _PoolRef) -> WorkerPool:
    pool = WorkerPool.__new__(WorkerPool)
    pool._ref = ref
    return pool


@internal
def _pool_op(rrid: RRID, name: str, *args: Any) -> Any:
    rv = PGRP.refs.get(rrid)
    if rv is None:
        raise InvalidStateError("this worker pool no longer exists on its owner")
    state: _PoolState = rv.store
    if name == "len":
        return len(state.workers)
    if name == "isready":
        return state.free.isready()
    if name == "workers":
        return sorted(state.workers)
    return getattr(state, name)(*args)


class CachingPool(WorkerPool):
    """A ``WorkerPool`` that ships each function once per worker (Julia's ``CachingPool``)."""

    def __init__(self, pids: Iterable[int] = ()) -> None:
        super().__init__(pids)
        self._cache: dict[tuple[Callable[..., Any], int], AbstractRemoteRef] = {}
        self._cache_lock = threading.Lock()

    def __reduce__(self) -> Any:
        raise TypeError("a CachingPool belongs to the process that made it and cannot be sent")

    def wrap_function(self, f: Callable[..., Any], pid: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if pid == PGRP.myid:
            return f, ()
        key = (f, pid)
        with self._cache_lock:
            ref = self._cache.get(key)
        if ref is None:
            ref = _PoolRef._new(pid, next_rrid())
            call_fetch_async(pid, _cache_function, (ref.rrid, f), {}).result()
            with self._cache_lock:
                ref = self._cache.setdefault(key, ref)
        return _exec_from_cache, (ref,)

    def clear(self) -> None:
        """Forget every shipped function; the workers free their copies."""
        with self._cache_lock:
            self._cache.clear()

    @property
    def cached(self) -> int:
        return len(self._cache)


@internal
def _cache_function(rrid: RRID, f: Callable[..., Any]) -> None:
    lookup_ref(rrid, lambda: f)


def _exec_from_cache(ref: AbstractRemoteRef, *args: Any, **kwargs: Any) -> Any:
    rv = PGRP.refs.get(ref.rrid)
    if rv is None:
        raise InvalidStateError("the cached function is gone from this worker (the pool was cleared)")
    return rv.store(*args, **kwargs)


_DEFAULT_POOL: dict[str, WorkerPool] = {}
_default_lock = threading.Lock()


def default_worker_pool() -> WorkerPool:
    """The pool of all workers; on pid 1 it follows workers as they join and leave."""
    with _default_lock:
        pool = _DEFAULT_POOL.get("pool")
        if pool is None:
            if PGRP.myid == 1:
                pool = WorkerPool(p for p in cluster.workers() if p != 1)
                PGRP.refs[pool._ref.rrid].store.is_default = True
            else:
                pool = fetch_call(1, default_worker_pool, (), {})
            _DEFAULT_POOL["pool"] = pool
        return pool


def worker_joined(pid: int) -> None:
    """On pid 1, for each new worker: the default pool (if made yet) takes it."""
    pool = _DEFAULT_POOL.get("pool")
    if pool is not None:
        pool.push(pid)


def worker_left(pid: int) -> None:
    """On pid 1, for each worker that left: gone from the default pool."""
    pool = _DEFAULT_POOL.get("pool")
    if pool is not None:
        pool.remove(pid)


cluster.on_worker_joined(worker_joined)
cluster.on_worker_left(worker_left)
