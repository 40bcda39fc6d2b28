"""What a process is doing, read only when asked: its calls, links, memory and CPU.

Every process keeps counters that cost its hot path a few operations per call
(:class:`~clustercore.engine.callrunner.CallRunner`: the calls in flight and
counts of calls; each link's bytes received, added to by the thread that reads
it). :func:`sample` reads them, with the process's RSS and CPU time, into a
:class:`ProcessSample`; :func:`tracebacks` adds the stack of each call in flight.
Both are ``internal``: a worker runs them even when every call it runs is stuck
(a link whose reader runs a call gets a new reader within milliseconds, the
watchdog, and that reader runs these itself). The driver asks every worker at
once with :func:`clustercore.engine.requests.broadcast_call` and a deadline.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from .callrunner import count_of, internal
from .cluster import PGRP
from .message_handlers import run_batch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
