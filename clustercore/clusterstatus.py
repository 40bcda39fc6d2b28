"""``status()``: what every process of the cluster is doing, as plain objects.

One :class:`WorkerStatus` per process (the driver, pid 1, first), gathered from
the workers at once with a deadline: a worker that does not answer in time is
shown as ``"unresponsive"`` with what the driver knows of it, and never holds
the call up. :func:`calls_in_flight` adds each call's traceback.
Rates (calls/s, bytes/s, CPU) are over the time since the previous sample of
that process taken at least ``RATE_WINDOW`` seconds before (by any caller), or
since it started.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .engine import sampling
from .engine.cluster import PGRP, WorkerState, on_worker_left, procs
from .engine.hooks import manager_name
from .engine.requests import broadcast_call
from .engine.sampling import CallRecord, ProcessSample
from .engine.workerinfo import worker_info

RATE_WINDOW = 1.0  # seconds: rates are not taken over a shorter time than this


@dataclass(frozen=True)
class CallInFlight:
    """A user call running on a process."""

    pid: int
    function: str  #: ``module.qualname`` (``__main__`` left out); a pmap batch of n elements ends in ``[n]``
    started: float  #: when it started, ``time.time()`` on that process
    age: float  #: seconds it has been running
    thread: int  #: the thread running it there
    traceback: str = ""  #: where it is now, innermost frame last (from :func:`calls_in_flight` only)


@dataclass(frozen=True)
class WorkerStatus:
    """One process of the cluster, as :func:`status` found it."""

    pid: int
    host: str
    ospid: int
    manager: str  #: the manager that started it (``""`` for the driver)
    state: str  #: ``"idle"``, ``"busy"`` (calls in flight), ``"unresponsive"`` (no answer in time), ``"terminating"``
    calls_in_flight: tuple[CallInFlight, ...]  #: oldest first
    calls_started: int  #: totals since the process started
    calls_finished: int
    calls_failed: int
    bytes_in: int  #: bytes of the frames it received (from every peer)
    bytes_out: int  #: bytes of the frames the others received from it
    rss: int  #: resident memory, bytes
    cpu_seconds: float
    threads: int
    calls_per_s: float  #: calls finished or failed per second (see ``RATE_WINDOW``)
    bytes_in_per_s: float
    bytes_out_per_s: float
    cpu_percent: float  #: CPU time per wall time, in percent (100 per busy core)
    sampled: float  #: when the numbers were taken (``time.time()`` on the driver); 0 if never
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def oldest_call(self) -> CallInFlight | None:
        """The call that has been running longest, if any."""
        return self.calls_in_flight[0] if self.calls_in_flight else None


def status(timeout: float = 2.0) -> list[WorkerStatus]:
    """Every process of the cluster, pid 1 first, asked at once; a worker that has not
    answered within ``timeout`` seconds is ``"unresponsive"`` (its last numbers, if any)."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    on_worker_left(forget)  # from the first call on (once): what is kept of a worker goes with it
    pids = procs()
    samples: dict[int, ProcessSample | None] = broadcast_call(sampling.sample, pids, timeout=timeout, merge=True)
    sent: dict[int, int] = {}  # what each process sent: what the others received from it
    for pid, sample in samples.items():
        for peer, nbytes in sample.received.items() if sample is not None else ():
            if peer != pid:
                sent[peer] = sent.get(peer, 0) + nbytes
    return [_row(pid, samples.get(pid), sent.get(pid, 0)) for pid in pids]


def calls_in_flight(pid: int, timeout: float = 5.0) -> list[CallInFlight]:
    """The user calls running on ``pid`` now, oldest first, each with its thread's traceback.
    ``TimeoutError`` if ``pid`` does not answer within ``timeout`` seconds (a worker whose
    every thread is in Python code answers: its calls run on other threads than the one
    that reads the request; one stuck in C code holding the GIL does not)."""
    where = worker_info(pid)  # ValueError / ProcessExitedException for a pid that is not there
    records = broadcast_call(sampling.tracebacks, [pid], timeout=timeout, merge=True)[pid]
    if records is None:
        raise TimeoutError(
            f"pid {pid} did not answer within {timeout:g} s; `kill -USR2 {where.ospid}` on {where.host} prints "
            "every thread's stack to its output, even while C code holds its GIL"
        )
    now = time.time()
    return [_call(pid, r, now) for r in records]


# --- rows ----------------------------------------------------------------------------------------

_Mark = tuple[float, int, int, int, float]  # when, calls done, bytes in, bytes out, cpu seconds
_previous: dict[int, tuple[_Mark, _Mark]] = {}  # by pid: the mark rates are taken from, and the newest
_last: dict[int, WorkerStatus] = {}  # by pid: the last row with numbers (an unresponsive worker shows these)
_lock = threading.Lock()


def _row(pid: int, sample: ProcessSample | None, bytes_out: int) -> WorkerStatus:
    manager, state = "", ""
    if pid != PGRP.myid:
        w = PGRP.workers.get(pid)
        if w is not None and w.state is WorkerState.TERMINATING:
            state = "terminating"
        manager = "" if w is None else manager_name(w.manager)
    if sample is None:
        return _unresponsive(pid, manager, state)
    bytes_in = sum(sample.received.values())
    done = sample.calls_finished + sample.calls_failed
    mark = (sample.sampled, done, bytes_in, bytes_out, sample.cpu_seconds)
    with _lock:
        base, newest = _previous.get(pid, ((sample.started, 0, 0, 0, 0.0), mark))
        if mark[0] - newest[0] >= RATE_WINDOW:
            base = newest  # the newest mark is old enough to be the next one rates start from
        _previous[pid] = (base, newest if mark[0] - newest[0] < RATE_WINDOW else mark)
    span = max(mark[0] - base[0], 1e-6)
    calls = tuple(_call(pid, r, sample.sampled) for r in sample.in_flight)
    row = WorkerStatus(
        pid=pid,
        host=sample.host,
        ospid=sample.ospid,
        manager=manager,
        state=state or ("busy" if calls else "idle"),
        calls_in_flight=calls,
        calls_started=sample.calls_started,
        calls_finished=sample.calls_finished,
        calls_failed=sample.calls_failed,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        rss=sample.rss,
        cpu_seconds=sample.cpu_seconds,
        threads=sample.threads,
        calls_per_s=max(0.0, (done - base[1]) / span),
        bytes_in_per_s=max(0.0, (bytes_in - base[2]) / span),
        bytes_out_per_s=max(0.0, (bytes_out - base[3]) / span),
        cpu_percent=max(0.0, 100.0 * (sample.cpu_seconds - base[4]) / span),
        sampled=time.time(),
    )
    with _lock:
        _last[pid] = row
    return row


def _unresponsive(pid: int, manager: str, state: str) -> WorkerStatus:
    with _lock:
        last = _last.get(pid)
    w = PGRP.workers.get(pid)
    host = last.host if last else (w.hostname if w else "")
    ospid = last.ospid if last else (w.ospid if w else 0)
    now = time.time()
    calls: tuple[CallInFlight, ...] = ()
    if last is not None:  # the calls it ran when last heard of, aged to now
        calls = tuple(
            CallInFlight(c.pid, c.function, c.started, now - c.started, c.thread) for c in last.calls_in_flight
        )
    return WorkerStatus(
        pid=pid,
        host=host,
        ospid=ospid,
        manager=manager,
        state=state or "unresponsive",
        calls_in_flight=calls,
        calls_started=last.calls_started if last else 0,
        calls_finished=last.calls_finished if last else 0,
        calls_failed=last.calls_failed if last else 0,
        bytes_in=last.bytes_in if last else 0,
        bytes_out=last.bytes_out if last else 0,
        rss=last.rss if last else 0,
        cpu_seconds=last.cpu_seconds if last else 0.0,
        threads=last.threads if last else 0,
        calls_per_s=0.0,
        bytes_in_per_s=0.0,
        bytes_out_per_s=0.0,
        cpu_percent=0.0,
        sampled=last.sampled if last else 0.0,
    )


def _call(pid: int, record: CallRecord, now: float) -> CallInFlight:
    return CallInFlight(
        pid, record.function, record.started, max(0.0, now - record.started), record.thread, record.traceback
    )


def forget(pid: int) -> None:
    """Drop what is kept of ``pid`` (it left the cluster)."""
    with _lock:
        _previous.pop(pid, None)
        _last.pop(pid, None)
