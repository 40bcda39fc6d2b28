"""Threads that read links and run calls: leaders and followers.

A process serves calls concurrently (a call blocked on a Future or a sleep
must not stop the next one) without paying a thread hand-off per call. Each
link is read by one thread at a time, its *leader*. When the leader reads a
call it runs the call itself, right away, and then goes back to reading. If
the call is still running after ``PROMOTE_AFTER`` seconds, a watchdog makes
another thread the link's leader, so later calls are not held up. Pooled
threads are reused; on a worker the main thread takes part too and is
preferred, because only the main thread can be woken from a blocking system
call (a sleep) by a signal.

``interrupt()`` raises ``KeyboardInterrupt`` in every user call in flight: by
``SIGINT`` on the main thread, by an asynchronous exception on the others
(that reaches Python code, not a C call blocked on another thread).

The runner also keeps what ``clustercore.status()`` reads (docs/observability.md):
the user calls in flight (thread, function, arguments, start time) and counts of
calls finished and failed, kept without a lock (dict item assignments
and ``itertools.count``, each atomic under the GIL), and, while a ``trace()``
runs, a record of each call.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import CapturedException, RemoteException
from ..links.connection import THREAD
from ..logs import LazyLogger
from ..wire.framing import HEADER

Task = Callable[[], None]
log = LazyLogger(__name__)
PROMOTE_AFTER = 0.002
_WATCHDOG_IDLE_ROUNDS = 10  # 20 ms without a call: the watchdog sleeps until the next one
_POOL_IDLE_SECONDS = 60.0


def _closed() -> None:
    """Marks the end of a link where a task would be returned."""


_CLOSED: Task = _closed


def _no_task() -> None:
    """An idle pool thread's task: it holds nothing (and is not ``_CLOSED``)."""


_NO_TASK: Task = _no_task


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in thread ``ident`` (None: cancel one not raised yet)."""
    import ctypes  # here, not at import: a worker starts faster

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None)


_BIRTH_RETRIES = 400  # times 0.5 ms: how long interrupt() waits while threads are being started


def _interrupt_thread(ident: int, lock: threading.Lock, still_wanted: Callable[[], bool]) -> None:
    """Raise KeyboardInterrupt in thread ``ident`` when no thread is being started. The
    caller holds ``lock``; it is let go while waiting, and ``still_wanted`` checked after.

    CPython gives a thread it is starting its creator's id until the new thread runs,
    and ``PyThreadState_SetAsyncExc`` picks the newest thread with that id: the
    exception would kill the new thread before it says it started, and its creator
    would wait for that forever. ``threading`` lists a thread in ``_limbo`` for all of
    that time, under ``_active_limbo_lock``: while the lock is held and the list empty,
    no such id is around and none can appear.
    """
    import ctypes  # noqa: F401 - imported here, not under threading's lock below

    limbo, limbo_lock = getattr(threading, "_limbo", None), getattr(threading, "_active_limbo_lock", None)
    if limbo is None or limbo_lock is None:  # another Python: nothing to wait for
        _set_async_exc(ident, KeyboardInterrupt)
        return
    for _ in range(_BIRTH_RETRIES):
        with limbo_lock:
            if not limbo:
                _set_async_exc(ident, KeyboardInterrupt)
                return
        lock.release()  # a thread being started may need it to get going
        try:
            time.sleep(0.0005)
        finally:
            lock.acquire()
        if not still_wanted():
            return


def _uncork(conn: Any) -> None:
    """Send what ``conn`` holds; a dead link is left to its reader, which notices it."""
    try:
        conn.uncork()
    except OSError:  # ConnectionClosed included
        pass


class _Link:
    """Read state of one link: is someone reading it, and since when has nobody."""

    __slots__ = ("closed", "conn", "handle", "leader", "on_close", "unread_since")

    def __init__(self, conn: Any, handle: Callable[[Any, Any], Task | None], on_close: Callable[[Any], None]) -> None:
        self.conn = conn
        self.handle = handle
        self.on_close = on_close
        # The thread that leads the link, 0 while a new leader is on its way. A leader that ran
        # a call checks it is still the one: a flag would not tell it from a later leader.
        self.leader = 0
        self.unread_since = 0.0
        self.closed = False


class CallRunner:
    """Leads links and runs calls on pooled threads (and the main thread on workers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool_tasks: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._idle = 0
        self._main_tasks: queue.SimpleQueue[Task] | None = None
        self._main_idle = False
        self._main_ident = threading.main_thread().ident
        self.in_user_code: set[int] = set()  # threads running a served call (interrupt's targets)
        self._held: set[int] = set()  # such threads in engine work: interrupts wait (interrupts_held)
        self._deferred: set[int] = set()  # ... and those an interrupt is waiting for
        self._unread: set[_Link] = set()
        self._calls_started = 0
        # What status() reads: user calls in flight by thread (f, args, start time), and counts.
        self.running: dict[int, tuple[Callable[..., Any], tuple[Any, ...], float]] = {}
        self.finished = itertools.count()  # calls started: these two and the calls in flight
        self.failed = itertools.count()
        self.trace: list[Any] | None = None  # while a trace() runs: what message_handlers records
        self._watchdog_wake = threading.Event()
        self._watchdog_active = False
        self._watchdog: threading.Thread | None = None
        self.pid = 0  # the pid RemoteExceptions name; set by the engine

    # --- threads -----------------------------------------------------------------------

    def spawn(self, task: Task) -> None:
        """Run ``task`` on an idle thread (the main thread first), or a new one."""
        with self._lock:
            if self._main_idle and self._main_tasks is not None:
                self._main_idle = False
                self._main_tasks.put(task)
                return
            if self._idle:
                self._idle -= 1
                self._pool_tasks.put(task)
                return
        threading.Thread(target=self._pool_loop, args=(task,), name="clustercore-thread", daemon=True).start()

    def _pool_loop(self, task: Task) -> None:
        while True:
            task()
            task = _NO_TASK  # what the task held (its arguments: memfds, too) is not kept while idle
            with self._lock:
                self._idle += 1
            while True:
                try:
                    task = self._pool_tasks.get(timeout=_POOL_IDLE_SECONDS)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle:  # nobody claimed this thread: retire it
                            self._idle -= 1
                            return
                    # a task was promised to an idle thread: wait for it

    def claim_main_thread(self) -> None:
        """Make the calling (main) thread the pool's first choice from now on (a worker's
        main): what is spawned waits for it until it calls :meth:`serve_on_main_thread`."""
        self._main_tasks = queue.SimpleQueue()
        signal.signal(signal.SIGINT, self._on_sigint)
        THREAD.sigint_held = True  # _on_sigint raises in calls only: sends need not hold it
        with self._lock:
            self._main_idle = True

    def serve_on_main_thread(self) -> None:
        """Run what is spawned on the claimed main thread, for good."""
        assert self._main_tasks is not None, "claim_main_thread() first"
        while True:
            task = self._main_tasks.get()
            try:
                task()
            except KeyboardInterrupt:  # one that reached engine code: this thread serves on
                log.warning("an interrupt reached the main thread outside a call; it was ignored")
            with self._lock:
                self._main_idle = True

    # --- leading links -------------------------------------------------------------------

    def serve(self, conn: Any, handle: Callable[[Any, Any], Task | None], on_close: Callable[[Any], None]) -> None:
        """Read ``conn`` from now on; ``handle(conn, frame)`` returns a call to run, or None."""
        link = _Link(conn, handle, on_close)
        self.spawn(lambda: self._lead(link))

    def _lead(self, link: _Link) -> None:
        link.leader = threading.get_ident()
        THREAD.serves_links = True  # a leader never waits for a peer, but in the calls it runs
        try:
            if link.conn.poller is None:
                self._lead_blocking(link)
            else:
                self._lead_polled(link)
        finally:
            THREAD.serves_links = False

    def _lead_blocking(self, link: _Link) -> None:
        """Read in ``recv``: nobody else reads this link while its leader leads."""
        read_lock = link.conn.read_lock
        while True:
            with read_lock:
                call = self._read_one(link)
            if call is _CLOSED:
                self._end_link(link)
                return
            if call is not None:
                keeps_leading = self._run_call_then_keep_reading(link, call)
                call = None  # not kept (nor its arguments) while this thread waits for the next
                if not keeps_leading:
                    return

    def _lead_polled(self, link: _Link) -> None:
        """Wait in epoll; callers may take the read right meanwhile (:mod:`clustercore.engine.directreply`)."""
        conn = link.conn
        ready = conn.has_buffered_bytes()  # worth reading without waiting first
        epoch = conn.read_epoch
        while True:
            if not ready:
                if conn.corked_by and conn.corked_by_me():
                    _uncork(conn)  # about to wait: send what we owe first
                epoch = conn.read_epoch
                ready = conn.wait_readable()
                if conn.closed:
                    break
                if not ready:
                    continue
            if not conn.read_lock.acquire(blocking=False):
                ready = False  # a caller is reading; it re-arms the poller when it lets go
                continue
            if conn.read_epoch != epoch and not conn.has_buffered_bytes():
                conn.arm()  # a caller read what woke us; wait again (at once if more came)
                conn.read_lock.release()
                ready = False
                continue
            try:
                call = self._read_one(link)
            finally:
                ready = conn.has_buffered_frame()
                if not ready:
                    conn.arm()
                conn.read_lock.release()
            if call is _CLOSED:
                break
            if call is not None:
                keeps_leading = self._run_call_then_keep_reading(link, call)
                call = None  # not kept (nor its arguments) while this thread waits for the next
                if not keeps_leading:
                    return
        self._end_link(link)

    def _end_link(self, link: _Link) -> None:
        link.closed = True
        with self._lock:
            self._unread.discard(link)
        link.conn.close()
        link.conn.close_poller()
        link.conn.code_tables = None  # what either end held for the other goes with the link
        link.on_close(link.conn)

    @staticmethod
    def _read_one(link: _Link) -> Task | None:
        """Read and handle one frame (holding the read right); ``_CLOSED`` when the link ends."""
        conn = link.conn
        try:
            if conn.has_buffered_frame():
                conn.cork()  # more to do at once: answer it all in one write
            elif conn.corked_by and conn.corked_by_me():
                conn.uncork()  # about to wait: send what we owe first
            frame = conn.read_frame()
            if frame is None:
                conn.mark_closed("closed by peer")
                return _CLOSED
            conn.bytes_received += _HEADER_SIZE + frame.payload.nbytes if not frame.buffers else frame_bytes(frame)
            return link.handle(conn, frame)
        except (OSError, EOFError) as exc:
            conn.mark_closed(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in a handler: drop the link, loudly
            log.exception("handling a message from pid %s failed", conn.peer)
            conn.mark_closed(f"handler error: {exc!r}")
        return _CLOSED

    def _run_call_then_keep_reading(self, link: _Link, call: Task) -> bool:
        if type(call) is QuickTask:  # returns at once: no watchdog to start, nothing to hand over
            call()
            return True
        me = threading.get_ident()
        with self._lock:
            link.unread_since = time.monotonic()
            self._unread.add(link)
            self._calls_started += 1
            if not self._watchdog_active:
                self._start_watchdog()
        THREAD.serves_links = False  # the call is the user's: its sends wait as any caller's do
        try:
            call()
        finally:
            THREAD.serves_links = True
        hand_back = False
        with self._lock:
            promoted = link.leader != me or link.closed  # another thread leads the link now
            if not promoted:
                self._unread.discard(link)
                if self._main_idle and self._main_tasks is not None and me != self._main_ident:
                    self._main_idle = False  # hand the link back to the main thread
                    link.leader = 0
                    hand_back = True
        keeps_leading = not (promoted or hand_back)
        if not keeps_leading and link.conn.corked_by_me():
            _uncork(link.conn)  # replies this thread held go out before it stops leading
        if hand_back:
            self._main_tasks.put(lambda: self._lead(link))  # type: ignore[union-attr]
        return keeps_leading

    def _try_spawn(self, task: Task) -> bool:
        """:meth:`spawn`, or False (logged) when no thread can be started now."""
        try:
            self.spawn(task)
        except (RuntimeError, MemoryError) as exc:
            log.warning("could not start a thread to read a link: %s", exc)
            return False
        return True

    def _start_watchdog(self) -> None:
        self._watchdog_active = True
        if self._watchdog is not None:
            self._watchdog_wake.set()
            return
        watchdog = threading.Thread(target=self._watch, name="clustercore-watchdog", daemon=True)
        try:
            watchdog.start()
        except (RuntimeError, MemoryError) as exc:  # no thread now: the next call tries again
            self._watchdog_active = False
            log.warning("could not start the watchdog thread: %s", exc)
            return
        self._watchdog = watchdog

    def _watch(self) -> None:
        """Give a link whose leader is busy running a call a new leader."""
        THREAD.serves_links = True  # it must never wait for a peer: every link depends on it
        quiet_rounds = 0
        seen_calls = -1
        while True:
            time.sleep(PROMOTE_AFTER)
            with self._lock:
                now = time.monotonic()
                for link in [x for x in self._unread if now - x.unread_since >= PROMOTE_AFTER]:
                    self._unread.discard(link)
                    link.leader = 0
                    self._lock.release()
                    try:
                        _uncork(link.conn)  # results the busy leader was holding
                        started = self._try_spawn(functools.partial(self._lead, link))
                    finally:
                        self._lock.acquire()
                    if not started:  # no thread to lead it now: the next round tries again
                        self._unread.add(link)
                busy = bool(self._unread) or self._calls_started != seen_calls
                seen_calls = self._calls_started
                quiet_rounds = 0 if busy else quiet_rounds + 1
                if quiet_rounds < _WATCHDOG_IDLE_ROUNDS:
                    continue
                self._watchdog_active = False
                self._watchdog_wake.clear()
            self._watchdog_wake.wait()
            quiet_rounds = 0

    # --- running a user call --------------------------------------------------------------

    def run_work_thunk(
        self, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], interruptible: bool = True
    ) -> tuple[Any, bool]:
        """Call ``f``; returns ``(value, False)`` or ``(RemoteException, True)``."""
        if not interruptible:
            try:
                return f(*args, **kwargs), False
            except BaseException as exc:  # noqa: BLE001
                return RemoteException(self.pid, CapturedException.capture(exc)), True
        ident = threading.get_ident()
        running = self.running
        outer = running.get(ident)  # a call that runs another inline (a call to this very process)
        running[ident] = (f, args, _now())
        try:
            self._enter_user_code(ident)
            try:
                value = f(*args, **kwargs)
            finally:
                # First thing: from here on no interrupt may target this thread. (On the main
                # thread, inline: a method call would let a pending SIGINT in before it.)
                if ident == self._main_ident:
                    self.in_user_code.discard(ident)
                    THREAD.user_call = None
                else:
                    self._leave_user_code(ident)
            next(self.finished)  # inline, not a method: this runs for every call
            if outer is None:
                del running[ident]  # only this thread writes its own key
            else:
                running[ident] = outer
            return value, False
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            self._leave_for_good(ident)
            next(self.failed)
            if outer is None:
                running.pop(ident, None)
            else:
                running[ident] = outer
            return RemoteException(self.pid, CapturedException.capture(exc)), True

    def _leave_for_good(self, ident: int) -> None:
        """Leave user code even if an interrupt cut the first try short (it may land
        while leaving, and a thread left marked would be interrupted in engine code)."""
        while True:
            try:
                self._leave_user_code(ident)
                return
            except KeyboardInterrupt:
                continue

    # The main thread is interrupted by SIGINT, whose handler checks membership: it needs
    # no lock. Other threads get an asynchronous exception from interrupt(), under the lock.

    def _enter_user_code(self, ident: int) -> None:
        THREAD.user_call = self
        if ident == self._main_ident:
            self.in_user_code.add(ident)
            return
        with self._lock:
            self.in_user_code.add(ident)

    def _leave_user_code(self, ident: int) -> None:
        THREAD.user_call = None
        if ident == self._main_ident:
            self.in_user_code.discard(ident)
            return
        with self._lock:
            if ident in self.in_user_code:
                self.in_user_code.discard(ident)
                _set_async_exc(ident, None)  # drop an interrupt that came too late

    @contextlib.contextmanager
    def interrupts_held(self) -> Iterator[None]:
        """Engine work inside a served call (a send): an interrupt that comes meanwhile is
        raised when it is over, so it never cuts a frame in two or leaves a link wedged."""
        ident = threading.get_ident()
        with self._lock:
            self._held.add(ident)
            self.in_user_code.discard(ident)
            if ident != self._main_ident:
                _set_async_exc(ident, None)
        THREAD.user_call = None
        try:
            yield
        finally:
            THREAD.user_call = self
            with self._lock:
                self._held.discard(ident)
                self.in_user_code.add(ident)
                deferred = ident in self._deferred
                self._deferred.discard(ident)
            if deferred:
                raise KeyboardInterrupt

    def interrupt(self) -> int:
        """Raise ``KeyboardInterrupt`` in each user call in flight; returns how many."""
        with self._lock:
            targets = list(self.in_user_code)
            for ident in targets:
                if ident == self._main_ident:
                    signal.pthread_kill(ident, signal.SIGINT)
                else:
                    _interrupt_thread(ident, self._lock, functools.partial(self.in_user_code.__contains__, ident))
            self._deferred.update(self._held)
        return len(targets) + len(self._held)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._main_ident in self.in_user_code:
            raise KeyboardInterrupt
        if self._main_ident in self._held:
            self._deferred.add(self._main_ident)


def frame_bytes(frame: Any) -> int:
    """The size of a frame as it came (header, payload, buffers), for the link's count of bytes received."""
    buffers = frame.buffers
    if not buffers:
        return _HEADER_SIZE + frame.payload.nbytes
    return _HEADER_SIZE + 8 * len(buffers) + frame.payload.nbytes + sum(memoryview(b).nbytes for b in buffers)


_HEADER_SIZE = HEADER.size


def count_of(counter: itertools.count[int]) -> int:
    """How many times ``next`` was called on ``counter`` (made as ``itertools.count()``),
    without changing it: its repr is ``count(N)``."""
    return int(repr(counter)[6:-1])


_now = time.time


QUICK = "quick"  # what quick_internal functions carry as _clustercore_internal (truthy, like internal's)


def internal(fn: Any) -> Any:
    """Mark an engine function that peers call: an ``interrupt`` does not hit it."""
    fn._clustercore_internal = True
    return fn


def quick_internal(fn: Any) -> Any:
    """An :func:`internal` function that returns at once and never waits: the link's
    reader runs it as a :class:`QuickTask`. What pid 1 asks of every worker as it joins
    (learn of its peers) then costs a worker no watchdog thread and no hand-over."""
    fn._clustercore_internal = QUICK
    return fn


class QuickTask:
    """A call of a :func:`quick_internal` function, for the reader to run itself."""

    __slots__ = ("run",)

    def __init__(self, run: Task) -> None:
        self.run = run

    def __call__(self) -> None:
        self.run()
