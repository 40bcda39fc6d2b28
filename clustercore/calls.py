"""The remote-call family (Julia's ``remotecall.jl``): run ``f`` on another process.

Calls addressed to this process's own pid run here, with the same semantics:
``remotecall`` and ``remote_do`` on a thread, ``remotecall_fetch`` inline, and
errors wrapped in :class:`RemoteException` all the same.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import syncblock as _sync
from .engine import cluster
from .engine.cluster import PGRP, Waiter
from .engine.messages import MsgType
from .engine.refs import lookup_ref
from .engine.remoterefs import AbstractRemoteRef, Future
from .engine.requests import fetch_call, send_call, send_call_with_waiter

if TYPE_CHECKING:
    from .workerpool import AbstractWorkerPool

_any_cycle = itertools.count()
_any_lock = threading.Lock()


def _is_pool(target: Any) -> bool:
    return getattr(target, "_clustercore_pool", False) is True


def _pooled(kind: str, f: Callable[..., Any], pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _check_callable(f)
    return remotecall_pool(kind, f, pool, args, kwargs)


def _check_callable(f: Any) -> None:
    if not callable(f):
        raise TypeError(f"expected a callable to run remotely, got {type(f).__name__}")


def remotecall(f: Callable[..., Any], pid: Any, /, *args: Any, **kwargs: Any) -> Future:
    """Start ``f(*args, **kwargs)`` on ``pid`` (or a free worker of a pool); returns a :class:`Future`."""
    if _is_pool(pid):
        return _pooled("remotecall", f, pid, args, kwargs)  # type: ignore[no-any-return]
    _check_callable(f)
    pid = cluster.check_pid(pid)
    if pid != PGRP.myid:
        cluster.worker_from_id(pid)
    fut = Future._made_for_call(pid)
    if pid == PGRP.myid:
        rv = lookup_ref(fut.rrid)
        runner = PGRP.runner
        runner.spawn(lambda: rv.store.set(*runner.run_work_thunk(f, args, kwargs)))
    else:
        send_call(pid, MsgType.CALL, (f, args, kwargs), response=fut.rrid)
    _sync.record(fut)
    return fut


def remotecall_notifying(f: Callable[..., Any], pid: int, /, *args: Any, **kwargs: Any) -> tuple[Future, Waiter]:
    """``remotecall`` plus a waiter that is set when the call has finished (for pools)."""
    _check_callable(f)
    if pid == PGRP.myid:
        fut = remotecall(f, pid, *args, **kwargs)
        waiter = Waiter(pid)

        def notify_when_done() -> None:
            with contextlib.suppress(Exception):  # a failure is the Future's to report
                fut.wait()
            waiter.set(None)

        PGRP.runner.spawn(notify_when_done)
        return fut, waiter
    cluster.worker_from_id(pid)
    fut = Future._made_for_call(pid)
    waiter = send_call_with_waiter(pid, MsgType.CALL_WAIT, (f, args, kwargs), response=fut.rrid)
    _sync.record(fut)
    return fut, waiter


def remotecall_fetch(f: Callable[..., Any], pid: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run ``f(*args, **kwargs)`` on ``pid`` (or a free worker of a pool) and return its value."""
    if type(pid) is not int and _is_pool(pid):
        return _pooled("remotecall_fetch", f, pid, args, kwargs)
    if not callable(f):
        _check_callable(f)
    return fetch_call(pid if type(pid) is int else cluster.check_pid(pid), f, args, kwargs)


def remotecall_wait(f: Callable[..., Any], pid: Any, /, *args: Any, **kwargs: Any) -> Future:
    """Like :func:`remotecall`, but return once the call has finished on ``pid``."""
    if _is_pool(pid):
        return _pooled("remotecall_wait", f, pid, args, kwargs)  # type: ignore[no-any-return]
    _check_callable(f)
    pid = cluster.check_pid(pid)
    if pid == PGRP.myid:
        fut = remotecall(f, pid, *args, **kwargs)
        fut.wait()
        return fut
    cluster.worker_from_id(pid)
    fut = Future._made_for_call(pid)
    waiter = send_call_with_waiter(pid, MsgType.CALL_WAIT, (f, args, kwargs), response=fut.rrid)
    _sync.record(fut)
    waiter.result()
    return fut


def remote_do(f: Callable[..., Any], pid: Any, /, *args: Any, **kwargs: Any) -> None:
    """Run ``f(*args, **kwargs)`` on ``pid`` and forget it; errors print on its stderr."""
    if _is_pool(pid):
        _pooled("remote_do", f, pid, args, kwargs)
        return
    _check_callable(f)
    pid = cluster.check_pid(pid)
    if pid == PGRP.myid:
        runner = PGRP.runner

        def job() -> None:
            value, failed = runner.run_work_thunk(f, args, kwargs)
            if failed:
                print(f"Error in remote_do on pid {pid}:\n{value.captured.traceback}", file=sys.stderr, flush=True)

        runner.spawn(job)
        return
    send_call(pid, MsgType.REMOTE_DO, (f, args, kwargs))


def _next_any() -> int:
    pids = cluster.workers()
    with _any_lock:
        return pids[next(_any_cycle) % len(pids)]


def spawnat(p: int | str, f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
    """``remotecall`` on pid ``p``; ``p="any"`` picks workers round robin."""
    if p == "any":
        p = _next_any()
    elif isinstance(p, str):
        raise ValueError(f"spawnat takes a pid or 'any', not {p!r}")
    return remotecall(f, p, *args, **kwargs)


def fetchfrom(p: int | str, f: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fetch(spawnat(p, f, ...))``; ``p="any"`` is Julia's ``@fetch``."""
    if p == "any":
        p = _next_any()
    elif isinstance(p, str):
        raise ValueError(f"fetchfrom takes a pid or 'any', not {p!r}")
    return remotecall_fetch(f, p, *args, **kwargs)


def fetch(x: Any) -> Any:
    """The value of a Future, or the head of a channel (without taking it); anything else as is."""
    from .channels import Channel

    if isinstance(x, (AbstractRemoteRef, Channel)):
        return x.fetch()  # type: ignore[union-attr]
    return x


def put(ref: Any, value: Any) -> Any:
    """Set a Future (once), or put into a channel (waiting while it is full)."""
    return ref.put(value)


def take(channel: Any) -> Any:
    """Remove and return the first item of a channel, waiting for one."""
    return channel.take()


def isready(ref: Any) -> bool:
    """Whether a Future has its value, or a channel an item (or a pool a free worker)."""
    return bool(ref.isready())


def wait(ref: Any, timeout: float | None = None) -> Any:
    """Wait until a reference is ready; ``TimeoutError`` after ``timeout`` seconds."""
    return ref.wait(timeout)


# --- calls through a pool -------------------------------------------------------------


def remotecall_pool(kind: str, f: Callable[..., Any], pool: AbstractWorkerPool, args: Any, kwargs: Any) -> Any:
    """Julia's ``remotecall_pool``: take a worker, call, give it back when the call is done."""
    pid = pool.take()
    try:
        fn, extra = pool.wrap_function(f, pid)
        if kind == "remotecall":
            fut, waiter = remotecall_notifying(fn, pid, *extra, *args, **kwargs)
            # Not on the link's reader, which sets the waiter: a pool may live on another process.
            waiter.add_done_callback(lambda _: PGRP.runner.spawn(functools.partial(pool.put, pid)))
            return fut
        if kind == "remote_do":
            remote_do(fn, pid, *extra, *args, **kwargs)
            pool.put(pid)
            return None
    except BaseException:
        pool.put(pid)
        raise
    try:
        if kind == "remotecall_fetch":
            return remotecall_fetch(fn, pid, *extra, *args, **kwargs)
        return remotecall_wait(fn, pid, *extra, *args, **kwargs)
    finally:
        pool.put(pid)


def remote(f: Callable[..., Any], pool: AbstractWorkerPool | None = None) -> Callable[..., Any]:
    """A function that runs ``f`` on a free worker of ``pool`` (default: the default pool)."""
    from .workerpool import default_worker_pool

    def on_a_worker(*args: Any, **kwargs: Any) -> Any:
        return remotecall_pool("remotecall_fetch", f, pool or default_worker_pool(), args, kwargs)

    on_a_worker.__name__ = f"remote({getattr(f, '__name__', 'f')})"
    return on_a_worker
