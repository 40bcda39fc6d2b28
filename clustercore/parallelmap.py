"""``pmap`` (Julia's ``pmap.jl``): map a function over iterables on the workers of a pool.

Results come back in order. Elements go out in batches (``batch_size``;
``"auto"`` uses ``ceil(n / (4 * workers))``, multiprocessing's own choice),
and several batches are in flight to each worker at once, so a worker never
waits for a round trip between two batches. The function is pickled once per
worker and cached there. Each element fails or succeeds on its own:
``retry_delays`` allows ``len(retry_delays)`` more attempts (``retry_check``
may veto one), then ``on_error(exc)`` runs here and its value takes the
element's place; a worker that dies fails its batches, whose elements are
retried on the remaining workers when retries are allowed.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import cluster
from .calls import call_fetch_async
from .cluster import PGRP, Waiter
from .errors import CapturedException, ProcessExitedException, RemoteException
from .wire.serialize import register_plain_type
from .workerpool import AbstractWorkerPool, default_worker_pool

_PENDING: Any = object()
RetryCheck = Callable[[Any, BaseException], tuple[Any, bool]]


# --- the worker's side ------------------------------------------------------------------


@register_plain_type
class _FunctionBlob:
    """A function pickled once on the caller; workers unpickle each blob once."""

    __slots__ = ("data", "digest")

    def __init__(self, digest: bytes, data: bytes) -> None:
        self.digest = digest
        self.data = data

    def __reduce__(self) -> Any:
        return _FunctionBlob, (self.digest, self.data)


_function_cache: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 64


def _resolve(blob: _FunctionBlob | Callable[..., Any]) -> Callable[..., Any]:
    if not isinstance(blob, _FunctionBlob):
        return blob
    with _cache_lock:
        f = _function_cache.get(blob.digest)
        if f is not None:
            _function_cache.move_to_end(blob.digest)
            return f
    from .wire.serialize import loads

    f = loads(blob.data, [])
    with _cache_lock:
        _function_cache[blob.digest] = f
        while len(_function_cache) > _CACHE_SIZE:
            _function_cache.popitem(last=False)
    return f


def _pmap_batch(blob: Any, batch: list[Any], star: bool) -> tuple[list[Any], dict[int, RemoteException]]:
    """Run one batch (``f(x)``, or ``f(*x)`` with ``star``); each element fails on its own."""
    f = _resolve(blob)
    errors: dict[int, RemoteException] = {}
    values: list[Any] = []
    for i, x in enumerate(batch):
        try:
            values.append(f(*x) if star else f(x))
        except BaseException as exc:  # noqa: BLE001 - reported per element
            values.append(None)
            errors[i] = RemoteException(PGRP.myid, CapturedException.capture(exc))
    return values, errors


# --- the caller's side ------------------------------------------------------------------


def _check_options(batch_size: Any, retry_delays: Iterable[float]) -> list[float]:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size is a positive int or 'auto', not {batch_size!r}")
    delays = list(retry_delays)
    if any(isinstance(d, bool) or not isinstance(d, (int, float)) or d < 0 or math.isnan(d) for d in delays):
        raise ValueError(f"retry_delays are non-negative numbers of seconds, not {delays!r}")
    return delays


class _Elements:
    """Per-element bookkeeping shared by the distributed and the local map."""

    def __init__(
        self,
        n: int,
        delays: list[float],
        retry_check: RetryCheck | None,
        on_error: Callable[[BaseException], Any] | None,
        bar: Any,
    ) -> None:
        self.results: list[Any] = [_PENDING] * n
        self.attempts = [0] * n
        self.states: list[Any] = [None] * n
        self.left = n
        self.delays = delays
        self.retry_check = retry_check
        self.on_error = on_error
        self.bar = bar

    def succeeded(self, index: int, value: Any) -> None:
        self.results[index] = value
        self.left -= 1
        if self.bar is not None:
            self.bar.update(1)

    def failed(self, index: int, exc: BaseException) -> float | None:
        """Seconds to wait before retrying ``index``, or ``None`` when it is settled."""
        attempt = self.attempts[index]
        self.attempts[index] += 1
        if attempt < len(self.delays):
            retry = True
            if self.retry_check is not None:
                self.states[index], retry = self.retry_check(self.states[index], exc)
            if retry:
                return self.delays[attempt]
        if self.on_error is None:
            raise exc
        self.succeeded(index, self.on_error(exc))
        return None


def _chunks(indices: range, size: int) -> deque[list[int]]:
    return deque(list(indices[i : i + size]) for i in range(0, len(indices), size))


class _DistributedMap:
    """Keeps up to ``depth`` batches in flight on each worker until every element is settled."""

    def __init__(
        self, f: Callable[..., Any], args: list[Any], star: bool, pids: list[int], size: int, elements: _Elements
    ) -> None:
        self.f = f
        self.args = args
        self.star = star
        self.pids = list(pids)
        self.elements = elements
        self.todo = _chunks(range(len(args)), size)
        self.later: list[tuple[float, int, list[int]]] = []  # (when, seq, batch) to retry
        self.seq = 0
        self.depth = 24 if size == 1 else 2
        self.inflight = dict.fromkeys(self.pids, 0)
        self.blobs: dict[int, Any] = {}
        self.done: queue.SimpleQueue[tuple[Waiter, int, list[int]]] = queue.SimpleQueue()

    def _blob(self, pid: int) -> Any:
        blob = self.blobs.get(pid)
        if blob is None:  # pickled for this pid: references in f are counted for it
            data = cluster.dumps_in_band_for(pid, self.f)
            blob = self.blobs[pid] = _FunctionBlob(hashlib.blake2b(data, digest_size=16).digest(), data)
        return blob

    def run(self) -> list[Any]:
        while self.elements.left:
            self._release_due_retries()
            self._dispatch()
            if not any(self.inflight.values()):
                if not self.todo and not self.later:
                    break
                if not self.pids:
                    raise ProcessExitedException(0, "pmap: every worker of the pool has exited")
            timeout = max(0.0, self.later[0][0] - time.monotonic()) if self.later else None
            try:
                item = self.done.get(timeout=timeout)
            except queue.Empty:
                continue
            self._settle(*item)
            while True:
                try:
                    self._settle(*self.done.get_nowait())
                except queue.Empty:
                    break
        return self.elements.results

    def _release_due_retries(self) -> None:
        now = time.monotonic()
        while self.later and self.later[0][0] <= now:
            self.todo.appendleft(heapq.heappop(self.later)[2])

    def _dispatch(self) -> None:
        corked: list[Any] = []
        try:
            self._dispatch_corked(corked)
        finally:
            for conn in corked:
                conn.uncork()

    def _dispatch_corked(self, corked: list[Any]) -> None:
        while self.todo and self.pids:
            pid = min(self.pids, key=self.inflight.__getitem__)
            if self.inflight[pid] >= self.depth:
                return
            batch = self.todo.popleft()
            try:
                conn = cluster.connection_to(pid)
                if not conn.corked_by_me():
                    conn.cork()
                    corked.append(conn)
                waiter = call_fetch_async(
                    pid, _pmap_batch, (self._blob(pid), [self.args[i] for i in batch], self.star), {}
                )
            except ProcessExitedException as exc:
                self.todo.appendleft(batch)
                self._lose_worker(pid, exc)
                continue
            self.inflight[pid] += 1
            waiter.add_done_callback(lambda w, pid=pid, batch=batch: self.done.put((w, pid, batch)))

    def _lose_worker(self, pid: int, exc: BaseException) -> None:
        if pid in self.pids:
            self.pids.remove(pid)

    def _settle(self, waiter: Waiter, pid: int, batch: list[int]) -> None:
        self.inflight[pid] -= 1
        if not waiter.failed:
            values, errors = waiter.value
            for pos, index in enumerate(batch):
                if pos in errors:
                    self._retry_or_settle(index, errors[pos])
                else:
                    self.elements.succeeded(index, values[pos])
            return
        exc = waiter.value
        if isinstance(exc, ProcessExitedException):
            self._lose_worker(pid, exc)
        for index in batch:
            self._retry_or_settle(index, exc)

    def _retry_or_settle(self, index: int, exc: BaseException) -> None:
        delay = self.elements.failed(index, exc)
        if delay is not None:
            self.seq += 1
            heapq.heappush(self.later, (time.monotonic() + delay, self.seq, [index]))


def _local_map(f: Callable[..., Any], args: list[Any], star: bool, elements: _Elements) -> list[Any]:
    """``distributed=False``: the elements run concurrently on threads of this process."""

    def attempt(index: int) -> tuple[int, bool, Any]:
        try:
            return index, True, (f(*args[index]) if star else f(args[index]))
        except Exception as exc:  # noqa: BLE001 - settled by the caller's thread
            return index, False, RemoteException(PGRP.myid, CapturedException.capture(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(args)))) as threads:
        pending = {threads.submit(attempt, i) for i in range(len(args))}
        while pending:
            finished = next(iter(_as_completed(pending)))
            pending.discard(finished)
            index, ok, value = finished.result()
            if ok:
                elements.succeeded(index, value)
                continue
            delay = elements.failed(index, value)
            if delay is not None:
                time.sleep(delay)  # the retry delay itself, not a synchronisation
                pending.add(threads.submit(attempt, index))
    return elements.results


def _as_completed(futures: set[Any]) -> Iterable[Any]:
    from concurrent.futures import as_completed

    return as_completed(futures)


def _progress_bar(n: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("pmap(progress=True) draws its bar with tqdm: pip install tqdm") from None
    return tqdm(total=n, desc="pmap", unit="task")


def pmap(
    f: Callable[..., Any],
    *iterables: Any,
    pool: AbstractWorkerPool | None = None,
    distributed: bool = True,
    batch_size: int | str = 1,
    on_error: Callable[[BaseException], Any] | None = None,
    retry_delays: Iterable[float] = (),
    retry_check: RetryCheck | None = None,
    progress: bool = False,
) -> list[Any]:
    """``[f(*xs) for xs in zip(*iterables)]``, computed on the workers of ``pool``.

    ``pmap(f, pool, xs)`` with the pool first also works. See the module
    docstring for batching, retries and errors.
    """
    if iterables and isinstance(iterables[0], AbstractWorkerPool):
        if pool is not None:
            raise TypeError("pmap got a pool both positionally and as pool=")
        pool, iterables = iterables[0], iterables[1:]
    if not callable(f):
        raise TypeError(f"pmap maps a callable, not {type(f).__name__}")
    if not iterables:
        raise TypeError("pmap needs at least one iterable")
    delays = _check_options(batch_size, retry_delays)
    star = len(iterables) > 1
    args = list(zip(*iterables, strict=False)) if star else list(iterables[0])
    if not args:
        return []
    if distributed:
        pids = sorted(p for p in (pool or default_worker_pool()).workers if p != PGRP.myid)
        distributed = bool(pids)
    bar = _progress_bar(len(args), progress)
    elements = _Elements(len(args), delays, retry_check, on_error, bar)
    try:
        if not distributed:
            return _local_map(f, args, star, elements)
        size = math.ceil(len(args) / (4 * len(pids))) if batch_size == "auto" else int(batch_size)
        return _DistributedMap(f, args, star, pids, size, elements).run()
    finally:
        if bar is not None:
            bar.close()
