"""``pmap`` (Julia's ``pmap.jl``): map a function over iterables on the workers of a pool.

Results come back in order. Elements go out in batches (``batch_size``;
``"auto"`` uses ``ceil(n / (4 * workers))``, multiprocessing's own choice),
and several batches are in flight to each worker at once, so a worker never
waits for a round trip between two batches. The function is sent once per
worker (a DEFINE_FUNCTION message) and each batch names it (CALL_BATCH).

Each element fails or succeeds on its own. As in Julia, with ``batch_size=1``
``on_error`` wraps ``f`` where it runs: it gets the original exception and its
value is the element's result. ``retry_delays`` (read lazily: it may be
infinite) then allows one more attempt per delay for what still fails
(``retry_check``, given the original exception, may veto one); a retried
element goes to another worker than the one it failed on whenever the pool has
another. With larger batches, ``on_error`` runs here, on the original exception
of what still fails once the retries are spent. A worker that dies fails its
batches, whose elements are retried on the others.

Workers that join a pool owned by this process while the map runs (the
default pool follows ``addprocs``; an elastic manager's joins) get batches as
soon as they are seen, as Julia's pmap takes workers from its pool as it goes.

A pool that does not list its workers (a user's ``AbstractWorkerPool`` with
only ``push``/``put``/``take``/``len``/``isready``) is used as Julia uses
every pool: each batch takes a worker and gives it back.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent import futures as cf
from typing import Any

from .calls import remotecall_pool
from .engine.batches import BatchSender
from .engine.cluster import PGRP
from .engine.message_handlers import run_batch
from .errors import ProcessExitedException, RemoteException
from .links.connection import ConnectionClosed
from .workerpool import AbstractWorkerPool, default_worker_pool

_PENDING: Any = object()
RetryCheck = Callable[[Any, BaseException], "tuple[Any, bool] | bool"]
Outcome = tuple[list[Any], dict[int, RemoteException]]  # run_batch's values and per-position errors


# --- options --------------------------------------------------------------------------


def _check_batch_size(batch_size: Any) -> None:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size is a positive int or 'auto', not {batch_size!r}")


def _check_delay(delay: Any) -> float:
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0 or math.isnan(delay):
        raise ValueError(f"retry_delays are non-negative numbers of seconds, not {delay!r}")
    return float(delay)


class _Delays:
    """``retry_delays``, read only as far as the attempts need (it may be infinite).

    Every element counts its attempts from the start of the same sequence. A
    collection is checked at once; an iterator as it is read.
    """

    def __init__(self, source: Iterable[float]) -> None:
        if isinstance(source, Collection):
            self._seen = [_check_delay(d) for d in source]
            self._rest: Iterator[float] | None = None
        else:
            self._seen = []
            self._rest = iter(source)

    def get(self, attempt: int) -> float | None:
        """The delay before retry number ``attempt`` (from 0), or None when there is none."""
        while len(self._seen) <= attempt and self._rest is not None:
            try:
                self._seen.append(_check_delay(next(self._rest)))
            except StopIteration:
                self._rest = None
        return self._seen[attempt] if attempt < len(self._seen) else None


def _call_with_on_error(f: Callable[..., Any], on_error: Callable[[BaseException], Any], *args: Any) -> Any:
    """``f(*args)``, or ``on_error(exc)`` if it raised (Julia's ``wrap_on_error``)."""
    try:
        return f(*args)
    except Exception as exc:  # noqa: BLE001 - on_error decides, where f ran
        return on_error(exc)


def _extract_exception(exc: BaseException) -> BaseException:
    """What ``on_error`` and ``retry_check`` see: a remote call's original exception (as in Julia)."""
    return exc.captured.ex if isinstance(exc, RemoteException) else exc


# --- per-element bookkeeping ------------------------------------------------------------


class _Elements:
    """Results, attempts and retry state per element, shared by every kind of map.

    ``on_error`` here is the caller-side one (batches of more than one element);
    with ``batch_size=1`` it travels inside ``f`` instead and this one is None.
    """

    def __init__(
        self,
        n: int,
        delays: _Delays,
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

    def settle(self, indices: range | list[int], outcome: Outcome | BaseException) -> list[int]:
        """Record a batch's outcome, or the exception that failed it whole; the indices to retry."""
        if isinstance(outcome, BaseException):
            return [i for i in indices if self.failed(i, outcome)]
        values, errors = outcome
        if not errors and isinstance(indices, range):
            self.succeeded_range(indices, values)
            return []
        retry = []
        for pos, index in enumerate(indices):
            if pos not in errors:
                self.succeeded(index, values[pos])
            elif self.failed(index, errors[pos]):
                retry.append(index)
        return retry

    def failed(self, index: int, exc: BaseException) -> bool:
        """Whether to retry ``index`` (after :meth:`delay`); else it is settled, or ``exc`` is raised."""
        attempt = self.attempts.get(index, 0)
        self.attempts[index] = attempt + 1
        if self.delays.get(attempt) is not None and self._check(index, exc):
            return True
        if self.on_error is None:
            raise exc
        self.succeeded(index, self.on_error(_extract_exception(exc)))
        return False

    def delay(self, index: int) -> float:
        """Seconds to wait before the retry that :meth:`failed` allowed."""
        return self.delays.get(self.attempts[index] - 1) or 0.0

    def _check(self, index: int, exc: BaseException) -> bool:
        if self.retry_check is None:
            return True
        state = self.states.get(index)
        verdict = self.retry_check(state, _extract_exception(exc))
        if isinstance(verdict, tuple) and len(verdict) == 2:  # (state, retry), or a bare bool
            state, verdict = verdict
        self.states[index] = state
        return bool(verdict)


# --- over a pool that lists its workers -------------------------------------------------


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
    """Keeps up to ``depth`` batches in flight on each worker until every element is settled.

    This process may be one of the workers (a ``pmap`` called on a worker): its
    batches run on its own threads, one at a time.
    """

    def __init__(
        self,
        f: Callable[..., Any],
        args: list[Any],
        star: bool,
        pool: AbstractWorkerPool,
        pids: list[int],
        size: int,
        elements: _Elements,
    ) -> None:
        self.f = f
        self.args = args
        self.star = star
        self.pool = pool
        self.generation = -1  # the first look reconciles with the pool: one may join before it
        self.pids = list(pids)
        self.elements = elements
        self.todo: deque[range | list[int]] = deque(
            range(i, min(i + size, len(args))) for i in range(0, len(args), size)
        )
        self.later: list[tuple[float, int, int, int]] = []  # (when, seq, index, failed on pid) to retry
        self.retries: deque[tuple[list[int], int]] = deque()  # ([index], failed on pid), due now
        self.seq = 0
        self.depth = 24 if size == 1 else 4
        self.inflight = dict.fromkeys(self.pids, 0)
        self.sender = BatchSender(f, star)
        self.done: queue.SimpleQueue[tuple[_Batch, Any, bool]] = queue.SimpleQueue()

    def run(self) -> list[Any]:
        while self.elements.left:
            self._release_due_retries()
            self._welcome_new_workers()
            self._dispatch()
            if not any(self.inflight.values()):
                if not self.pids:
                    raise ProcessExitedException(0, "pmap: every worker of the pool has exited")
                if not (self.todo or self.retries or self.later):
                    break
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
            _, _, index, failed_on = heapq.heappop(self.later)
            self.retries.append(([index], failed_on))

    def _welcome_new_workers(self) -> None:
        """Workers that joined the pool since the map began get batches too (Julia's pmap
        takes workers from the pool as it goes); one that left is not taken back."""
        news = _pool_members_since(self.pool, self.generation)
        if news is None:
            return
        self.generation, members = news
        for pid in sorted(members - self.inflight.keys()):
            self.pids.append(pid)
            self.inflight[pid] = 0

    def _room(self, pid: int) -> bool:
        return self.inflight[pid] < (1 if pid == PGRP.myid else self.depth)

    def _least_busy(self, pids: list[int]) -> int | None:
        free = [p for p in pids if self._room(p)]
        return min(free, key=self.inflight.__getitem__) if free else None

    def _dispatch(self) -> None:
        try:
            self._dispatch_retries()
            while self.todo:
                pid = self._least_busy(self.pids)
                if pid is None:
                    return
                batch = self.todo.popleft()
                if not self._send(pid, batch):
                    self.todo.appendleft(batch)
        finally:
            self.sender.flush()

    def _dispatch_retries(self) -> None:
        """Each retry goes to another worker than the one it failed on, or waits for one."""
        for _ in range(len(self.retries)):
            indices, failed_on = self.retries.popleft()
            others = [p for p in self.pids if p != failed_on] or self.pids
            pid = self._least_busy(others)
            if pid is None or not self._send(pid, indices):
                self.retries.append((indices, failed_on))

    def _send(self, pid: int, batch: range | list[int]) -> bool:
        """Start ``batch`` on ``pid``; False if that worker is gone (it leaves the map)."""
        args = self.args
        items = args[batch.start : batch.stop] if isinstance(batch, range) else [args[i] for i in batch]
        if pid == PGRP.myid:
            self._run_here(_Batch(self.done, pid, batch), items)
        else:
            try:
                self.sender.send(pid, items, _Batch(self.done, pid, batch), self.inflight[pid] > 0)
            except (ProcessExitedException, ConnectionClosed):
                self._lose_worker(pid)
                return False
        self.inflight[pid] += 1
        return True

    def _run_here(self, batch: _Batch, items: list[Any]) -> None:
        runner = PGRP.runner
        f, star = self.f, self.star
        runner.spawn(lambda: batch.set(*runner.run_work_thunk(run_batch, (f, items, star), {})))

    def _lose_worker(self, pid: int) -> None:
        if pid in self.pids:
            self.pids.remove(pid)

    def _settle(self, batch: _Batch, value: Any, failed: bool) -> None:
        self.inflight[batch.pid] -= 1
        if failed and isinstance(value, ProcessExitedException):
            self._lose_worker(batch.pid)
        for index in self.elements.settle(batch.indices, value):
            self.seq += 1
            when = time.monotonic() + self.elements.delay(index)
            heapq.heappush(self.later, (when, self.seq, index, batch.pid))


# --- on threads: here, or over a pool known only by take and put --------------------------


def _threaded_map(
    run: Callable[[list[Any]], Outcome], args: list[Any], size: int, threads: int, elements: _Elements
) -> list[Any]:
    """Run each batch through ``run`` on up to ``threads`` threads until every element is settled."""

    def attempt(indices: range | list[int]) -> tuple[range | list[int], Outcome | BaseException]:
        try:
            return indices, run([args[i] for i in indices])
        except Exception as exc:  # noqa: BLE001 - the whole batch failed (e.g. its worker died)
            return indices, exc

    batches = [range(i, min(i + size, len(args))) for i in range(0, len(args), size)]
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(threads, len(batches))))
    try:
        pending = {pool.submit(attempt, b) for b in batches}
        later: list[tuple[float, int, int]] = []  # (when, seq, index) to retry
        seq = itertools.count()
        while pending or later:
            while later and later[0][0] <= time.monotonic():
                pending.add(pool.submit(attempt, [heapq.heappop(later)[2]]))
            wait_for = max(0.0, later[0][0] - time.monotonic()) if later else None
            if not pending:
                time.sleep(wait_for or 0.0)  # the retry delay itself, not a synchronisation
                continue
            finished, pending = cf.wait(pending, wait_for, return_when=cf.FIRST_COMPLETED)
            for done in finished:
                for index in elements.settle(*done.result()):
                    heapq.heappush(later, (time.monotonic() + elements.delay(index), next(seq), index))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return elements.results


def _run_here(f: Callable[..., Any], star: bool) -> Callable[[list[Any]], Outcome]:
    def run(items: list[Any]) -> Outcome:
        return run_batch(f, items, star)

    return run


def _run_through_pool(f: Callable[..., Any], star: bool, pool: AbstractWorkerPool) -> Callable[[list[Any]], Outcome]:
    def run(items: list[Any]) -> Outcome:
        return remotecall_pool("remotecall_fetch", run_batch, pool, (f, items, star), {})  # type: ignore[no-any-return]

    return run


def _pool_members_since(pool: AbstractWorkerPool, generation: int) -> tuple[int, set[int]] | None:
    """The pool's members if they changed since ``generation`` and it can say so here at no cost."""
    since = getattr(pool, "members_since", None)
    return None if since is None else since(generation)  # type: ignore[no-any-return]


def _listed_workers(pool: AbstractWorkerPool) -> list[int] | None:
    """The pool's workers, ascending; None for a pool that does not list them."""
    try:
        return sorted(pool.workers)
    except NotImplementedError:
        return None


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
    _check_batch_size(batch_size)
    delays = _Delays(retry_delays)
    star = len(iterables) > 1
    args = list(zip(*iterables, strict=False)) if star else list(iterables[0])
    if not args:
        return []
    pool, pids, workers = _where(pool, distributed)
    size = 1 if pool is None else _batch_size(batch_size, len(args), workers)
    if on_error is not None and size == 1:  # on_error runs where f runs (Julia's wrap_on_error)
        f, on_error = functools.partial(_call_with_on_error, f, on_error), None
    bar = _progress_bar(len(args), progress)
    elements = _Elements(len(args), delays, retry_check, on_error, bar)
    try:
        if pool is None:
            return _threaded_map(_run_here(f, star), args, 1, min(32, len(args)), elements)
        if pids is None:
            return _threaded_map(_run_through_pool(f, star, pool), args, size, workers, elements)
        return _DistributedMap(f, args, star, pool, pids, size, elements).run()
    finally:
        if bar is not None:
            bar.close()


def _where(
    pool: AbstractWorkerPool | None, distributed: bool
) -> tuple[AbstractWorkerPool | None, list[int] | None, int]:
    """The pool to map over (None: threads here), its workers if it lists them, and how many it has."""
    if not distributed:
        return None, None, 1
    if pool is None:
        pool = default_worker_pool()
    pids = _listed_workers(pool)
    count = len(pids) if pids is not None else len(pool)
    if count == 0 or pids == [PGRP.myid]:
        return None, None, 1  # no worker but this process: no remote calls (as in Julia)
    return pool, pids, count


def _batch_size(batch_size: int | str, n: int, workers: int) -> int:
    return math.ceil(n / (4 * max(1, workers))) if batch_size == "auto" else int(batch_size)
