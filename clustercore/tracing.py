"""``trace()``: a timeline of every call and ``pmap`` batch the workers ran, and the page
that draws it.

While the block runs, each process records each user call it serves (worker side:
when it started and ended on that process's clock, its function, the bytes of its
frame, how many elements a pmap batch had, whether it failed); at the end the driver
collects the records and puts them on its own clock (each worker's offset is taken
from the round trips that started and stopped the trace). :meth:`Trace.save` writes
a self-contained HTML page (the data and the script that draws it inline: no
network), a PNG of that page (drawn by headless Chromium), or JSON. The page is
``clustercore/_assets/trace.html`` (HTML, CSS and the script that draws the trace as
SVG), whose ``__TITLE__`` and ``__DATA__`` are filled in one pass.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .engine import cluster
from .engine.cluster import procs
from .engine.recording import start_trace, stop_trace
from .engine.requests import broadcast_call

_HOLE = re.compile("__TITLE__|__DATA__")
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


@dataclass(frozen=True)
class TraceEvent:
    """One call (or pmap batch) as a worker ran it."""

    pid: int
    function: str  #: ``module.qualname`` (``__main__`` left out)
    start: float  #: seconds since the trace began, on the driver's clock
    end: float
    elements: int  #: 1 for a call; a pmap batch's number of elements
    bytes: int  #: bytes of the call's frame as it arrived (arguments, or the batch's elements)
    failed: bool  #: the call raised (for a batch: any element did)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Trace:
    """What :func:`trace` recorded; filled in when its block ends."""

    started: float = 0.0  #: ``time.time()`` on the driver when the trace began
    duration: float = 0.0  #: seconds the block ran
    pids: list[int] = field(default_factory=list)  #: the processes traced
    events: list[TraceEvent] = field(default_factory=list)  #: by start time
    dropped: dict[int, int] = field(default_factory=dict)  #: records a process kept no room for, by pid
    missing: list[int] = field(default_factory=list)  #: processes that gave no records (gone, or no answer)

    def busy(self) -> dict[int, float]:
        """Seconds each process spent running traced calls (overlapping calls counted once)."""
        out: dict[int, float] = {pid: 0.0 for pid in self.pids}
        by_pid: dict[int, list[TraceEvent]] = {}
        for event in self.events:
            by_pid.setdefault(event.pid, []).append(event)
        for pid, events in by_pid.items():
            total, reach = 0.0, float("-inf")
            for event in sorted(events, key=lambda e: e.start):
                if event.end > reach:
                    total += event.end - max(event.start, reach)
                    reach = event.end
            out[pid] = total
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "events": [asdict(e) for e in self.events]})

    def to_html(self, title: str = "clustercore trace") -> str:
        """A self-contained page: one lane per process, a bar per call; hover for details,
        the wheel zooms, dragging pans, a double click resets."""
        # In a script element, "<" in the data could end it or open a comment ("</script",
        # "<!--"): JSON may spell it, ">" and "&" as escapes. Both holes are filled in one
        # pass, so a title that says "__DATA__" stays a title.
        data = self.to_json().translate(_SCRIPT_SAFE)
        fill = {"__TITLE__": html.escape(title), "__DATA__": data}
        return _HOLE.sub(lambda m: fill[m[0]], page_template())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the trace by ``path``'s suffix: ``.html`` (the page), ``.png`` (the page drawn
        by headless Chromium), ``.json``. Returns the path."""
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix in (".html", ".htm"):
            target.write_text(self.to_html())
        elif suffix == ".json":
            target.write_text(self.to_json())
        elif suffix == ".png":
            _screenshot(self.to_html(), target, lanes=len(self.pids))
        else:
            raise ValueError(f"save writes .html, .png or .json, not {target.suffix or 'a path without a suffix'!r}")
        return target


@functools.cache
def page_template() -> str:
    """The page :meth:`Trace.to_html` fills: ``clustercore/_assets/trace.html`` (shipped as package data)."""
    return importlib.resources.files("clustercore").joinpath("_assets", "trace.html").read_text(encoding="utf-8")


_active = threading.Lock()  # held while a trace runs
_running: list[tuple[Trace, dict[int, float], float]] = []  # that trace, its clock offsets, its timeout
_running_lock = threading.Lock()


def _worker_joined(pid: int) -> None:
    """A worker that joins while a trace runs is traced from then on."""
    with _running_lock:
        if not _running:
            return
        result, offsets, timeout = _running[0]
        before = time.time()
        clock = broadcast_call(start_trace, [pid], timeout=timeout)[pid]
        if clock is not None:
            offsets[pid] = _offset(clock, before, time.time())
        result.pids.append(pid)


@contextmanager
def trace(timeout: float = 10.0) -> Iterator[Trace]:
    """Record every call and pmap batch the cluster's processes run in the block; the
    :class:`Trace` is filled in when the block ends. Workers that join meanwhile are traced
    from when they join; each process has ``timeout`` seconds to answer at the start and at
    the end.
    One trace at a time (``RuntimeError`` otherwise)."""
    if not _active.acquire(blocking=False):
        raise RuntimeError("a trace() is already running")
    cluster.on_worker_joined(_worker_joined)  # from the first trace on (once): joiners are traced
    try:
        result = Trace(pids=procs())
        before = time.time()
        clocks = broadcast_call(start_trace, result.pids, timeout=timeout)
        after = time.time()
        result.started = before
        offsets = {pid: _offset(clock, before, after) for pid, clock in clocks.items() if clock is not None}
        with _running_lock:
            _running[:] = [(result, offsets, timeout)]
        try:
            yield result
        finally:
            with _running_lock:
                _running.clear()
            before = time.time()
            stopped = broadcast_call(stop_trace, result.pids, timeout=timeout)
            after = time.time()
            result.duration = before - result.started
            _collect(result, stopped, offsets, before, after)
    finally:
        _active.release()


def _offset(clock: float, before: float, after: float) -> float:
    """How far a process's clock is ahead of the driver's, from ``clock``, read there between
    ``before`` and ``after`` here; 0 when the round trip cannot tell (one host's clock)."""
    ahead = clock - (before + after) / 2
    return ahead if abs(ahead) > (after - before) / 2 else 0.0


def _collect(result: Trace, stopped: dict[int, Any], offsets: dict[int, float], before: float, after: float) -> None:
    events = []
    for pid in result.pids:
        answer = stopped.get(pid)
        if answer is None:
            result.missing.append(pid)
            continue
        clock, records, dropped = answer
        offset = (offsets.get(pid, 0.0) + _offset(clock, before, after)) / 2  # its clock minus the driver's
        if dropped:
            result.dropped[pid] = dropped
        for function, elements, nbytes, start, end, failed in records:
            begin = start - offset - result.started
            events.append(TraceEvent(pid, function, begin, begin + (end - start), elements, nbytes, failed))
    result.events = sorted(events, key=lambda e: (e.start, e.pid))


# --- the PNG: the page drawn by headless Chromium -------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """A Chromium (or Chrome) executable on ``PATH``, or ``CLUSTERCORE_CHROMIUM``."""
    configured = os.environ.get("CLUSTERCORE_CHROMIUM")
    if configured:
        return configured
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def chromium_command(chromium: str, profile: str) -> list[str]:
    """Headless Chromium that talks to no network service and keeps nothing."""
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


def _screenshot(page: str, target: Path, lanes: int) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("saving a trace as PNG needs Chromium (Debian: apt install chromium); .html needs nothing")
    with tempfile.TemporaryDirectory(prefix="clustercore-trace-") as tmp:
        source = Path(tmp) / "trace.html"
        source.write_text(page)
        height = 220 + 60 * max(lanes, 1)  # the chart's lanes, and a row each in the table below it
        command = [
            *chromium_command(chromium, str(Path(tmp) / "profile")),
            "--hide-scrollbars",
            f"--window-size=1400,{height}",
            f"--screenshot={target.resolve()}",
            source.as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp)
        if done.returncode != 0 or not target.exists():
            raise RuntimeError(f"Chromium could not draw the trace (exit {done.returncode}): {done.stderr[-500:]}")
