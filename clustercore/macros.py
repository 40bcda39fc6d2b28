"""Julia's macros as functions: ``everywhere``, ``clear``, ``distributed_for``.

Broadcasts go to every target at once and gather the replies as they arrive.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .calls import remotecall
from .engine import cluster
from .engine.cluster import PGRP
from .engine.remoterefs import Future
from .engine.requests import call_fetch_async
from .errors import CapturedException, RemoteException
from .wire import memfd


def _run_in_main(code: str | Callable[[], Any], values: dict[str, Any]) -> Any:
    main = sys.modules["__main__"]
    for name, value in values.items():
        setattr(main, name, value)
    if callable(code):
        return code()
    exec(compile(code, "<everywhere>", "exec"), main.__dict__)
    return None


def _gather(pids: Sequence[int], f: Callable[..., Any], args: tuple[Any, ...], what: str) -> list[Any]:
    """Run ``f(*args)`` on every pid at once; failures become one ExceptionGroup."""
    results, errors = _outcomes(pids, f, args)
    if errors:
        raise ExceptionGroup(f"{what} failed on {len(errors)} of {len(pids)} processes", errors)
    return results


def _outcomes(
    pids: Sequence[int], f: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[list[Any], list[RemoteException]]:
    """``f(*args)`` on every pid at once: the values (``None`` where it failed) and the failures."""
    waiters = []
    for pid in pids:
        try:
            waiters.append(call_fetch_async(pid, f, args, {}))
        except Exception as exc:  # noqa: BLE001 - e.g. a pid that is gone: report it with the rest
            failed = cluster.Waiter(pid)
            failed.set(RemoteException(pid, CapturedException.capture(exc)), failed=True)
            waiters.append(failed)
    results, errors = [], []
    for waiter in waiters:
        waiter.wait()
        if waiter.failed:
            error = waiter.value
            errors.append(
                error
                if isinstance(error, RemoteException)
                else RemoteException(waiter.pid, CapturedException.capture(error))
            )
        results.append(None if waiter.failed else waiter.value)
    return results, errors


def everywhere(code: str | Callable[[], Any], *, procs: int | Iterable[int] | None = None, **values: Any) -> None:
    """Run ``code`` (Python source, or a callable) in ``__main__`` of every process in ``procs``.

    ``procs`` (a pid or pids) defaults to ``procs()``, the driver included; ``values``
    are bound as globals there first (Julia's ``$x``). It runs everywhere even where
    it fails; the failures, this process's too, raise one ``ExceptionGroup``.
    """
    if not (isinstance(code, str) or callable(code)):
        raise TypeError("everywhere runs Python source (a str) or a callable")
    if isinstance(code, str):
        compile(code, "<everywhere>", "exec")  # a syntax error is the caller's, raised here
    targets = _pid_list(cluster.procs() if procs is None else procs)
    here = [p for p in targets if p == PGRP.myid]
    _, errors = _outcomes(here, _run_in_main, (code, values))  # here first: the rest may rely on it
    once = memfd.OneCopy()  # a large array among the values: one memfd for every worker on this host
    try:
        with once:
            _, remote_errors = _outcomes([p for p in targets if p != PGRP.myid], _run_in_main, (code, values))
    finally:
        once.close()
    errors += remote_errors
    if errors:
        raise ExceptionGroup(f"everywhere failed on {len(errors)} of {len(targets)} processes", errors)


def _pid_list(pids: int | Iterable[int]) -> list[int]:
    """Each pid once, ascending; a bare int is a list of one (Julia's ``@everywhere p ex``)."""
    if isinstance(pids, int):
        return [cluster.check_pid(pids)]
    return sorted(set(pids))


def _clear_globals(names: list[str], module: str) -> None:
    target = sys.modules.get(module)
    if target is None:
        return
    for name in names:
        if hasattr(target, name):
            setattr(target, name, None)


def clear(names: Any, pids: Iterable[int] | None = None, mod: str = "__main__") -> None:
    """Set the globals ``names`` of module ``mod`` to ``None`` on ``pids`` (default: the workers).

    ``clear(pool)`` empties a ``CachingPool``'s cache instead.
    """
    if hasattr(names, "clear") and getattr(names, "_clustercore_pool", False):
        names.clear()
        return
    listed = [names] if isinstance(names, str) else list(names)
    if not all(isinstance(n, str) and n.isidentifier() for n in listed):
        raise ValueError(f"clear takes global names (identifiers), not {names!r}")
    targets = sorted(set(cluster.workers() if pids is None else pids))
    _gather(targets, _clear_globals, (listed, mod), "clear")


def splitrange(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous chunks whose sizes differ by at most one."""
    parts = max(1, min(parts, n)) if n else 1
    base, extra = divmod(n, parts)
    chunks, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        chunks.append(range(start, start + size))
        start += size
    return chunks


def _run_chunk(body: Callable[[Any], Any], items: list[Any], reducer: Callable[[Any, Any], Any] | None) -> Any:
    if reducer is None:
        for item in items:
            body(item)
        return None
    return functools.reduce(reducer, map(body, items))


def distributed_for(
    body: Callable[[Any], Any], iterable: Iterable[Any], reducer: Callable[[Any, Any], Any] | None = None
) -> Any:
    """Julia's ``@distributed``: one contiguous chunk of ``iterable`` per worker.

    With ``reducer``, returns ``reduce(reducer, map(body, iterable))``, reduced on
    each worker and then, in order, here. Without, returns at once with the
    list of Futures.
    """
    items = list(iterable)
    pids = cluster.workers()
    chunks = [c for c in splitrange(len(items), len(pids)) if len(c)]
    futures: list[Future] = [
        remotecall(_run_chunk, pid, body, items[chunk.start : chunk.stop], reducer)
        for pid, chunk in zip(pids, chunks, strict=False)
    ]
    if reducer is None:
        return futures
    if not futures:
        raise TypeError("distributed_for with a reducer needs a non-empty iterable")
    return functools.reduce(reducer, (f.fetch() for f in futures))
