"""What a process is doing, read only when asked: its calls, links, memory and CPU.

Every process keeps counters that cost its hot path a few operations per call
(:class:`~clustercore.engine.callrunner.CallRunner`: the calls in flight and
counts of calls; each link's bytes received, added to by the thread that reads
it). :func:`sample` reads them, with the process's RSS and CPU time, into a
:class:`ProcessSample`; the driver gathers samples from every worker with
:func:`gather`, which never waits past its deadline and keeps at most one request
per worker in flight, so a worker that does not answer costs one request, not
one per refresh. A worker serves these requests even when every call it runs is
stuck: a link whose reader runs a call gets a new reader within milliseconds
(the watchdog), and that reader runs these functions (marked ``internal``) itself.

A trace (``clustercore.trace()``) sets ``CallRunner.trace`` on each process with
:func:`start_trace` and takes the records back with :func:`stop_trace`.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .callrunner import count_of, internal
from .cluster import PGRP, Waiter
from .message_handlers import run_batch
from .requests import call_fetch_async

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TRACE_LIMIT = 1_000_000  # records kept per process and trace; later ones are counted, not kept


@dataclass
class CallRecord:
    """One user call in flight on a process."""

    thread: int  #: the thread running it (``threading.get_ident()`` there)
    function: str  #: what it runs: ``module.qualname``, with ``[n]`` for a pmap batch of n elements
    started: float  #: when it started, ``time.time()`` on that process
    traceback: str = ""  #: where it is now (only from :func:`tracebacks`)


@dataclass
class ProcessSample:
    """A process's counters at one moment (totals since it started)."""

    pid: int
    ospid: int
    host: str
    started: float  #: when the process started (``time.time()`` there)
    sampled: float  #: when this sample was taken (``time.time()`` there)
    calls_started: int
    calls_finished: int
    calls_failed: int
    in_flight: list[CallRecord]
    received: dict[int, int]  #: bytes of the frames received, by the pid that sent them
    rss: int  #: resident memory, bytes
    cpu_seconds: float  #: user + system time of the whole process
    threads: int
    tracing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def describe(f: Any, args: tuple[Any, ...] = ()) -> str:
    """A call's function as people name it: ``module.qualname`` (``__main__`` left out);
    a pmap batch is its function with ``[n]``, n elements."""
    if f is run_batch and len(args) >= 2:
        return f"{describe(args[0])} [{len(args[1])}]"
    name = str(getattr(f, "__qualname__", None) or getattr(type(f), "__qualname__", "?"))
    module = getattr(f, "__module__", None)
    return name if module in (None, "__main__", "builtins") else f"{module}.{name}"


@internal
def sample() -> ProcessSample:
    """This process's counters now."""
    runner = PGRP.runner
    now = time.time()
    in_flight = [
        CallRecord(ident, describe(f, args), started) for ident, (f, args, started) in list(runner.running.items())
    ]
    received: dict[int, int] = {}
    for pid, w in list(PGRP.workers.items()):
        conn = w.conn
        if conn is not None:
            received[pid] = received.get(pid, 0) + conn.bytes_received
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessSample(
        pid=PGRP.myid,
        ospid=os.getpid(),
        host=PGRP.hostname,
        started=_process_started(),
        sampled=now,
        calls_started=count_of(runner.finished) + count_of(runner.failed) + len(in_flight),
        calls_finished=count_of(runner.finished),
        calls_failed=count_of(runner.failed),
        in_flight=sorted(in_flight, key=lambda c: c.started),
        received=received,
        rss=_rss(),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        threads=threading.active_count(),
        tracing=runner.trace is not None,
    )


@internal
def tracebacks() -> list[CallRecord]:
    """The user calls in flight here, each with the stack of the thread running it
    (innermost last, the engine's own frames left out), oldest first."""
    frames = sys._current_frames()
    out = []
    for ident, (f, args, started) in list(PGRP.runner.running.items()):
        frame = frames.get(ident)
        stack = traceback.format_stack(frame) if frame is not None else ["(the thread has finished)\n"]
        out.append(CallRecord(ident, describe(f, args), started, "".join(_user_frames(stack))))
    return sorted(out, key=lambda c: c.started)


def _user_frames(stack: list[str]) -> list[str]:
    """The frames from the call's function inward: what runs it is the engine's business."""
    for i, entry in enumerate(stack):
        if "in run_work_thunk" in entry.partition("\n")[0]:
            rest = stack[i + 1 :]
            if rest and "in run_batch" in rest[0].partition("\n")[0]:
                rest = rest[1:]
            return rest or stack
    return stack


@internal
def start_trace() -> float:
    """Record every user call from now on; this process's clock (``time.time()``)."""
    runner = PGRP.runner
    if runner.trace is None:
        runner.trace = _BoundedList(_TRACE_LIMIT)
    return time.time()


@internal
def stop_trace() -> tuple[float, list[tuple[str, int, int, float, float, bool]], int]:
    """Stop recording; this process's clock, its records ``(function, elements, bytes in,
    start, end, failed)`` and how many were dropped past the limit."""
    runner = PGRP.runner
    trace, runner.trace = runner.trace, None
    now = time.time()
    if trace is None:
        return now, [], 0
    records = [(describe(f), elements, nbytes, start, end, failed) for f, elements, nbytes, start, end, failed in trace]
    return now, records, getattr(trace, "dropped", 0)


class _BoundedList(list):  # type: ignore[type-arg]
    """A list that keeps its first ``limit`` items and counts the rest."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, item: Any) -> None:
        if len(self) < self.limit:
            super().append(item)
        else:
            self.dropped += 1


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # not Linux: the peak, which is what getrusage has
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_STARTED: list[float] = []


def _process_started() -> float:
    """When this process started (``time.time()``), from ``/proc``; else when this module loaded."""
    if not _STARTED:
        started = _LOADED
        try:
            with open("/proc/self/stat", "rb") as f:
                ticks = int(f.read().rpartition(b")")[2].split()[19])
            with open("/proc/uptime", "rb") as f:
                uptime = float(f.read().split()[0])
            started = time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        _STARTED.append(started)
    return _STARTED[0]


_LOADED = time.time()


# --- on the driver: asking every worker, with a deadline ---------------------------------------

_pending: dict[tuple[int, str], Waiter] = {}  # requests not answered yet, by (pid, function)
_pending_lock = threading.Lock()


def gather(
    f: Callable[..., Any], pids: Iterable[int], timeout: float, *args: Any, merge: bool = True
) -> dict[int, Any]:
    """``f(*args)`` on each of ``pids`` at once; the values by pid, ``None`` for a pid that
    did not answer within ``timeout`` seconds (or is gone, or failed). A pid whose earlier
    request of ``f`` is still unanswered is not asked again: that request is waited for
    (``merge=False``: it is, for requests that change something, as starting a trace).
    On a worker, a pid it has no link to is not asked (``None``): dialing it could take
    longer than the whole deadline."""
    deadline = time.monotonic() + timeout
    waiters: dict[int, Waiter | None] = {}
    for pid in pids:
        waiters[pid] = _ask(pid, f, args, merge)
    out: dict[int, Any] = {}
    for pid, waiter in waiters.items():
        if waiter is None or not waiter.wait(max(0.0, deadline - time.monotonic())) or waiter.failed:
            out[pid] = None
        else:
            out[pid] = waiter.value
    return out


def _ask(pid: int, f: Callable[..., Any], args: tuple[Any, ...], merge: bool) -> Waiter | None:
    key = (pid, f.__qualname__ if not args else f"{f.__qualname__}{args!r}")
    with _pending_lock:
        waiter = _pending.get(key) if merge else None
        if waiter is not None and not waiter.done:
            return waiter
    if pid == PGRP.myid:
        waiter = Waiter(pid)
        try:
            waiter.set(f(*args))
        except Exception as exc:  # noqa: BLE001 - reported as no answer
            waiter.set(exc, True)
        return waiter
    if PGRP.myid != 1:
        w = PGRP.workers.get(pid)
        if w is None or w.conn is None or w.conn.closed:
            return None
    try:
        waiter = call_fetch_async(pid, f, args, {})
    except Exception:  # noqa: BLE001 - gone, or not reachable: no answer
        return None
    if not merge:
        return waiter
    with _pending_lock:
        _pending[key] = waiter
    waiter.add_done_callback(lambda w: _forget(key, w))  # at once if answered already: not under the lock
    return waiter


def _forget(key: tuple[int, str], waiter: Waiter) -> None:
    with _pending_lock:
        if _pending.get(key) is waiter:
            del _pending[key]
