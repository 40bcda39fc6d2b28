"""``Executor``: the ``concurrent.futures`` interface over a worker pool.

Existing code written for ``ProcessPoolExecutor`` runs on a cluster
unchanged: ``submit`` returns a ``concurrent.futures.Future`` (so
``as_completed`` and ``wait`` work; a failed call's exception is a
``RemoteException``), ``map`` keeps order and takes a ``chunksize``,
``shutdown`` waits or cancels. Each task takes a free worker
from the pool and gives it back when done, like any pooled call.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .engine.cluster import PGRP
from .engine.requests import call_fetch_async
from .sigint import WaitableThread
from .workerpool import AbstractWorkerPool, default_worker_pool


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


class Executor(cf.Executor):
    """Runs submitted calls on the workers of ``pool`` (default: the default pool)."""

    def __init__(self, pool: AbstractWorkerPool | None = None) -> None:
        self._pool = pool
        self._tasks: queue.SimpleQueue[
            tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None
        ]
        self._tasks = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._running: set[cf.Future[Any]] = set()
        self._dispatcher = WaitableThread(self._dispatch, name="clustercore-executor")
        self._dispatcher.start()

    @property
    def pool(self) -> AbstractWorkerPool:
        return self._pool or default_worker_pool()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        if not callable(fn):
            raise TypeError(f"submit takes a callable, not {type(fn).__name__}")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            future: cf.Future[Any] = cf.Future()
            self._tasks.put((future, fn, args, kwargs))
        return future

    def _dispatch(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                pool = self.pool
                pid = pool.take()
                remote_fn, extra = pool.wrap_function(fn, pid)
                waiter = call_fetch_async(pid, remote_fn, (*extra, *args), kwargs)
            except BaseException as exc:  # noqa: BLE001 - the task's failure, not the dispatcher's
                future.set_exception(exc)
                continue
            with self._lock:
                self._running.add(future)
            # Not on the link's reader, which sets the waiter: the future's callbacks are the user's.
            finish = functools.partial(self._finish, future, waiter, pid, pool)
            waiter.add_done_callback(lambda _, finish=finish: PGRP.runner.spawn(finish))

    def _finish(self, future: cf.Future[Any], waiter: Any, pid: int, pool: AbstractWorkerPool) -> None:
        pool.put(pid)
        with self._lock:
            self._running.discard(future)
        if waiter.failed:
            future.set_exception(waiter.value)
        else:
            future.set_result(waiter.value)

    def map(
        self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        args = iter(zip(*iterables, strict=False))
        chunks = iter(lambda: list(itertools.islice(args, chunksize)), [])
        results = super().map(_run_chunk, itertools.repeat(fn), chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
        if cancel_futures:
            while True:
                try:
                    task = self._tasks.get_nowait()
                except queue.Empty:
                    break
                if task is not None:
                    task[0].cancel()
        self._tasks.put(None)
        if wait:
            self._dispatcher.wait()
            with self._lock:
                running = list(self._running)
            cf.wait(running)
