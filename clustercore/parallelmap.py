"""``pmap`` (Julia's ``pmap.jl``): map a function over iterables on the workers of a pool.

Results come back in order. Elements go out in batches (``batch_size``;
``"auto"`` uses ``ceil(n / (4 * workers))``, multiprocessing's own choice),
and several batches are in flight to each worker at once, so a worker never
waits for a round trip between two batches. The function is sent once per
worker (a DEFINE_FUNCTION message) and each batch names it (CALL_BATCH). Each element fails or succeeds on its own:
``retry_delays`` allows ``len(retry_delays)`` more attempts (``retry_check``
may veto one), then ``on_error(exc)`` runs here and its value takes the
element's place; a worker that dies fails its batches, whose elements are
retried on the remaining workers when retries are allowed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import cluster
from .cluster import PGRP
from .connection import ConnectionClosed
from .errors import CapturedException, ProcessExitedException, RemoteException
from .messages import MsgType
from .workerpool import AbstractWorkerPool, default_worker_pool

_PENDING: Any = object()
RetryCheck = Callable[[Any, BaseException], tuple[Any, bool]]


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
        self.attempts: dict[int, int] = {}  # only elements that failed at least once
        self.states: dict[int, Any] = {}
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

    def succeeded_range(self, indices: range, values: list[Any]) -> None:
        self.results[indices.start : indices.stop] = values
        self.left -= len(indices)
        if self.bar is not None:
            self.bar.update(len(indices))

    def failed(self, index: int, exc: BaseException) -> float | None:
        """Seconds to wait before retrying ``index``, or ``None`` when it is settled."""
        attempt = self.attempts.get(index, 0)
        self.attempts[index] = attempt + 1
        if attempt < len(self.delays):
            retry = True
            if self.retry_check is not None:
                self.states[index], retry = self.retry_check(self.states.get(index), exc)
            if retry:
                return self.delays[attempt]
        if self.on_error is None:
            raise exc
        self.succeeded(index, self.on_error(exc))
        return None


class _Batch:
    """One batch in flight; the link's reader hands its outcome to the map's queue."""

    __slots__ = ("indices", "pid", "queue")

    def __init__(
        self, queue: queue.SimpleQueue[tuple[_Batch, Any, bool]], pid: int, indices: range | list[int]
    ) -> None:
        self.queue = queue
        self.pid = pid
        self.indices = indices

    def set(self, value: Any, failed: bool = False) -> None:  # the waiter protocol of a link
        self.queue.put((self, value, failed))


class _DistributedMap:
    """Keeps up to ``depth`` batches in flight on each worker until every element is settled."""

    _ids = itertools.count(1)

    def __init__(
        self, f: Callable[..., Any], args: list[Any], star: bool, pids: list[int], size: int, elements: _Elements
    ) -> None:
        self.f = f
        self.args = args
        self.star = star
        self.pids = list(pids)
        self.elements = elements
        self.todo: deque[range | list[int]] = deque(
            range(i, min(i + size, len(args))) for i in range(0, len(args), size)
        )
        self.later: list[tuple[float, int, list[int]]] = []  # (when, seq, [index]) to retry
        self.seq = 0
        self.depth = 24 if size == 1 else 4
        self.inflight = dict.fromkeys(self.pids, 0)
        self.fid = (PGRP.myid << 40) | next(self._ids)
        self.defined: set[int] = set()
        self.done: queue.SimpleQueue[tuple[_Batch, Any, bool]] = queue.SimpleQueue()

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
            while self.todo and self.pids:
                pid = min(self.pids, key=self.inflight.__getitem__)
                if self.inflight[pid] >= self.depth:
                    return
                batch = self.todo.popleft()
                try:
                    conn = cluster.connection_to(pid)
                    # An idle worker's first batch goes out at once, the rest in one write: sending
                    # all of one worker's batches first delays the next worker's start whenever the
                    # woken worker takes this CPU (it may, over a Unix socket) until it blocks.
                    idle = self.inflight[pid] == 0
                    if not idle and not conn.corked_by_me():
                        conn.cork()
                        corked.append(conn)
                    self._send(conn, pid, batch)
                except (ProcessExitedException, ConnectionClosed) as exc:
                    self.todo.appendleft(batch)
                    self._lose_worker(pid, exc)
                    continue
                self.inflight[pid] += 1
        finally:
            for conn in corked:
                conn.uncork()

    def _send(self, conn: Any, pid: int, batch: range | list[int]) -> None:
        if pid not in self.defined:  # the function goes once per link, pickled for that pid
            payload, buffers = cluster.dumps_for(pid, (self.fid, self.f))
            conn.send_frame(MsgType.DEFINE_FUNCTION, payload, buffers)
            self.defined.add(pid)
        args = self.args
        items = args[batch.start : batch.stop] if isinstance(batch, range) else [args[i] for i in batch]
        payload, buffers = cluster.dumps_for(pid, items)
        wid = PGRP.next_waiter_id()
        conn.waiters[wid] = _Batch(self.done, pid, batch)
        conn.send_frame(
            MsgType.CALL_BATCH, payload, buffers, response=(PGRP.myid, wid), notify=(int(self.star), self.fid)
        )
        if conn.closed:
            cluster.link_lost(conn)

    def _lose_worker(self, pid: int, exc: BaseException) -> None:
        if pid in self.pids:
            self.pids.remove(pid)

    def _settle(self, batch: _Batch, value: Any, failed: bool) -> None:
        self.inflight[batch.pid] -= 1
        indices = batch.indices
        if not failed:
            values, errors = value
            if not errors and isinstance(indices, range):
                self.elements.succeeded_range(indices, values)
                return
            for pos, index in enumerate(indices):
                if pos in errors:
                    self._retry_or_settle(index, errors[pos])
                else:
                    self.elements.succeeded(index, values[pos])
            return
        if isinstance(value, ProcessExitedException):
            self._lose_worker(batch.pid, value)
        for index in indices:
            self._retry_or_settle(index, value)

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
