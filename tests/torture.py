"""A seeded, randomized concurrency torture test of the engine.

Each round starts a few local workers, then many threads on the driver (and,
through ``fan`` calls, on workers) send calls of every kind at once, in
every direction, with payloads from 0 B to 8 MB (bytes and numpy arrays with
out-of-band buffers), while some rounds interrupt workers or SIGKILL one at a
random moment. Every call must return its own value, or, in a round with
faults, one of the documented exceptions, before the round's deadline; then
``rmprocs`` must succeed and no descriptor, writer thread or process may be
left. A hang dumps every process's stacks and fails.

The plan of a round (its workers, threads, calls, sizes and faults) follows
from the seed alone, so a failure is replayed with the seed it prints::

    python -m tests.torture --seconds 600            # make torture
    python -m tests.torture --seed 1234 --rounds 1   # replay one round
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np

import clustercore as cc
from clustercore.engine.cluster import PGRP
from clustercore.errors import ProcessExitedException, RemoteException
from clustercore.testing import wait_until_gone
from clustercore.wire import memfd

# Seconds for one round's calls (a round moves at most ~150 MB); a hang fails the round.
ROUND_DEADLINE = float(os.environ.get("TORTURE_ROUND_DEADLINE", "120"))
SIZES = (0, 1, 100, 4096, 65536, 300_000, 1_600_000, 8_000_000)
SIZE_WEIGHTS = (4, 4, 8, 6, 6, 4, 2, 1)


# --- what runs on the workers (shipped by value) -----------------------------------------


def echo(x: Any) -> Any:
    return x


def slow_echo(x: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return x


def relay(target: int, x: Any) -> Any:
    """A call nested through this process: ``x`` goes on to ``target`` and back."""
    return cc.remotecall_fetch(echo, target, x)


def put_into(ref: Any, x: Any) -> None:
    cc.put(ref, x)


def produce(channel: Any, items: list[Any]) -> None:
    for item in items:
        channel.put(item)
    channel.close()


def fan(targets: list[int], seed: int, nthreads: int, calls: int) -> list[str]:
    """Threads on this worker call ``targets`` at once; the failures they saw, as text."""
    rng = random.Random(seed)
    plans = [[(rng.choice(targets), payload(rng)) for _ in range(calls)] for _ in range(nthreads)]
    failures: list[str] = []

    def run(plan: list[tuple[int, Any]]) -> None:
        for target, x in plan:
            try:
                same(cc.remotecall_fetch(echo, target, x), x)
            except BaseException as exc:  # noqa: BLE001 - reported to the driver
                failures.append(describe(exc))

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


# --- payloads -----------------------------------------------------------------------------


def payload(rng: random.Random) -> Any:
    size = rng.choices(SIZES, SIZE_WEIGHTS)[0]
    data = rng.randbytes(size)
    if size >= 4096 and rng.random() < 0.4:
        return np.frombuffer(data, dtype=np.uint8).copy()  # travels out of band
    return data


def same(got: Any, want: Any) -> None:
    if isinstance(want, np.ndarray):
        ok = isinstance(got, np.ndarray) and np.array_equal(got, want)
    else:
        ok = type(got) is type(want) and got == want
    if not ok:
        raise AssertionError(f"wrong value: got {summary(got)}, want {summary(want)}")


def summary(x: Any) -> str:
    if isinstance(x, (bytes, np.ndarray)):
        return f"{type(x).__name__} of {len(x)} bytes"
    if isinstance(x, list):
        return f"list of {len(x)}"
    return repr(x)[:80]


def describe(exc: BaseException) -> str:
    text = str(exc)
    if len(text) > 1200:
        text = f"{text[:400]} [...] {text[-800:]}"
    return f"{type(exc).__name__}: {text}"


# --- one round ------------------------------------------------------------------------------


@dataclass
class Round:
    seed: int
    nworkers: int
    nthreads: int
    calls_per_thread: int
    fault: str  # "", "interrupt" or "kill"
    fault_at: float
    victim: int  # which of the round's workers is killed or interrupted (an index into pids)
    pids: list[int] = field(default_factory=list)
    calls: int = 0
    slowest: float = 0.0
    tolerated: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def plan(cls, seed: int) -> Round:
        rng = random.Random(seed)
        fault = rng.choices(["", "interrupt", "kill"], [2, 1, 1])[0]
        nthreads = rng.choice([1, 2, 3, 4, 8, 16, 32])
        return cls(
            seed=seed,
            nworkers=rng.randint(2, 4),
            nthreads=nthreads,
            calls_per_thread=max(2, 96 // nthreads),
            fault=fault,
            fault_at=rng.uniform(0.0, 1.5),
            victim=rng.randrange(4),
        )


class Failure(Exception):
    pass


class ProducerLost(Exception):
    """A value that a killed or interrupted ``remote_do`` was to put never came."""


def tolerated(exc: BaseException, fault: str) -> bool:
    """Whether ``exc`` is what a call may raise in a round with ``fault``."""
    if not fault:
        return False
    if isinstance(exc, ProducerLost):
        return True
    wanted = KeyboardInterrupt if fault == "interrupt" else ProcessExitedException
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, wanted):
            return True
        if isinstance(seen, RemoteException):
            seen = seen.captured.ex
        elif isinstance(seen, BaseExceptionGroup):
            return all(tolerated(e, fault) for e in seen.exceptions)
        else:
            return fault == "kill" and "has exited" in str(seen)
    return False


Call = tuple[str, Callable[[], None]]


def one_call(rng: random.Random, rnd: Round) -> Call:
    """A random call of a random kind: what it is, and a function that makes it and checks it."""
    pids = rnd.pids
    p = rng.choice(pids)
    x = payload(rng)
    kind = rng.choice(["fetch", "future", "wait", "remote_do", "future_put", "stream", "pmap", "nested", "fan", "slow"])
    make = _make_call(rng, rnd, kind, p, x)
    return f"{kind} on {p} ({summary(x)}{make[0]})", make[1]


def _make_call(rng: random.Random, rnd: Round, kind: str, p: int, x: Any) -> Call:
    pids = rnd.pids
    if kind == "fetch":
        return "", lambda: same(cc.remotecall_fetch(echo, p, x), x)
    if kind == "future":
        return "", lambda: same(cc.fetch(cc.remotecall(echo, p, x)), x)
    if kind == "wait":
        return "", lambda: same(cc.fetch(cc.remotecall_wait(echo, p, x)), x)
    owner = rng.choice([1, *pids])

    def ready(ref: Any) -> Any:
        """``ref`` once it holds a value. A value that a killed or interrupted worker was to
        put never comes (``remote_do`` is fire and forget), so there that wait is bounded."""
        if rnd.fault:
            try:
                cc.wait(ref, timeout=10.0)
            except TimeoutError:
                raise ProducerLost(f"worker {p} put nothing in 10 s") from None
        return ref

    if kind in ("remote_do", "future_put"):  # a value put by remote_do, read back from a ref
        channel = kind == "remote_do"
        make, read, what = (cc.RemoteChannel, cc.take, "channel") if channel else (cc.Future, cc.fetch, "future")

        def via_ref() -> None:
            ref = make(owner)
            cc.remote_do(put_into, p, ref, x)
            same(read(ready(ref)), x)

        return f", {what} on {owner}", via_ref
    small = [rng.randbytes(rng.choice([0, 10, 1000, 70_000])) for _ in range(rng.randint(1, 12))]
    if kind == "stream":

        def via_stream() -> None:
            size = rng.randint(1, 4)
            ch = cc.RemoteChannel(lambda: cc.Channel(size), owner)
            cc.remote_do(produce, p, ch, small)
            if rnd.fault:  # bounded: the producer may be stopped before it closes the channel
                got = [cc.take(ready(ch)) for _ in small]
            else:
                got = list(ch)
            if got != small:
                raise AssertionError(f"channel gave {len(got)} items, want {len(small)}")

        return f", {len(small)} items through a channel on {owner}", via_stream
    if kind == "pmap":
        batch = rng.choice([1, 2, "auto"])
        return f", {len(small)} items, batch_size={batch}", lambda: same(cc.pmap(echo, small, batch_size=batch), small)
    others = [q for q in [1, *pids] if q != p]
    if kind == "nested":
        q = rng.choice(others)
        return f", through to {q}", lambda: same(cc.remotecall_fetch(relay, p, q, x), x)
    if kind == "fan":
        targets = rng.sample(others, rng.randint(1, len(others)))
        seed, nthreads, calls = rng.getrandbits(32), rng.randint(1, 8), rng.randint(1, 4)

        def via_fan() -> None:
            failures = cc.remotecall_fetch(fan, p, targets, seed, nthreads, calls)
            bad = [f for f in failures if not rnd.fault]
            if bad:
                raise AssertionError(f"on worker {p}: {bad[0]}")

        return f", {nthreads} threads calling {targets}", via_fan
    seconds = rng.uniform(0.0, 0.3)
    return f", sleeping {seconds:.2f} s", lambda: same(cc.remotecall_fetch(slow_echo, p, x, seconds), x)


def run_round(rnd: Round, log: Callable[[str], None]) -> None:
    rnd.pids = cc.addprocs(rnd.nworkers)
    ospids = {p: PGRP.workers[p].ospid for p in rnd.pids}
    cc.everywhere(install_dumps)
    rng = random.Random(rnd.seed)
    plans = [[one_call(rng, rnd) for _ in range(rnd.calls_per_thread)] for _ in range(rnd.nthreads)]
    failures: list[str] = []
    running: dict[int, str] = {}
    start = time.monotonic()

    def run(plan: list[Call]) -> None:
        for label, call in plan:
            began = time.monotonic()
            running[threading.get_ident()] = label
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - every outcome is judged here
                if tolerated(exc, rnd.fault):
                    with rnd.lock:
                        rnd.tolerated += 1
                else:
                    failures.append(f"{label}: {describe(exc)}")
            del running[threading.get_ident()]
            took = time.monotonic() - began
            with rnd.lock:
                rnd.calls += 1
                rnd.slowest = max(rnd.slowest, took)

    threads = [threading.Thread(target=run, args=(plan,), daemon=True) for plan in plans]
    for t in threads:
        t.start()
    if rnd.fault:
        inject_fault(rnd, rng, ospids, threads)
    deadline = start + ROUND_DEADLINE
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        dump_stacks(ospids)
        raise Failure(f"calls still running after {ROUND_DEADLINE:g} s: {sorted(running.values())}")
    if failures:
        shown = "\n".join(f"[torture]   {line}" for failure in failures[:3] for line in failure.splitlines())
        raise Failure(f"{len(failures)} calls failed; the first ones:\n{shown}")
    cc.rmprocs(cc.workers(), waitfor=30)
    left = wait_until_gone(list(ospids.values()))
    if left:
        raise Failure(f"worker processes {left} outlived rmprocs")


def inject_fault(rnd: Round, rng: random.Random, ospids: dict[int, int], threads: list[threading.Thread]) -> None:
    """Interrupt workers a few times, or SIGKILL one, while the calls run."""
    victim = rnd.pids[rnd.victim % len(rnd.pids)]
    waits = [rng.uniform(0.0, rnd.fault_at) for _ in range(rng.randint(1, 4) if rnd.fault == "interrupt" else 1)]
    for seconds in waits:
        if not any(t.is_alive() for t in threads):
            return
        time.sleep(seconds)
        if rnd.fault == "interrupt":
            cc.interrupt(rng.choice([victim, *rnd.pids]))
        else:
            os.kill(ospids[victim], signal.SIGKILL)


def link_states() -> list[str]:
    """What each of this process's links holds: bytes unread, frames unsent, who reads."""
    import fcntl
    import struct
    import termios

    from clustercore.engine.cluster import PGRP  # this process's own (a global would travel by value)

    states = []
    for pid, w in sorted(PGRP.workers.items()):
        conn = w.conn
        if conn is None:
            continue
        sock = getattr(conn.transport, "sock", None)
        unread = -1
        if sock is not None and sock.fileno() >= 0:
            unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        states.append(
            f"link to {pid}: closed={conn.closed} in socket={unread} B buffered={conn.has_buffered_bytes()} "
            f"read_lock={conn.read_lock.locked()} corked_by={conn.corked_by} pending={len(conn._pending)} "
            f"writing={conn._writing} queued={len(conn._queue)} waiters={len(conn.waiters)}"
        )
    runner = PGRP.runner
    states.append(
        f"runner: unread={len(runner._unread)} watchdog_active={runner._watchdog_active} "
        f"in_user_code={sorted(runner.in_user_code)} threads={[(t.ident, t.name) for t in threading.enumerate()]}"
    )
    return states


def install_dumps() -> None:
    """On SIGUSR1 a worker prints its links' states and its threads' stacks."""
    from clustercore.engine.cluster import PGRP

    if PGRP.myid == 1:
        return
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    def dump(signum: int, frame: Any) -> None:
        print("\n".join(f"worker {PGRP.myid} {line}" for line in link_states()), flush=True)
        os.kill(os.getpid(), signal.SIGUSR2)

    try:
        signal.signal(signal.SIGUSR1, dump)
    except ValueError:  # not run on the main thread (it was busy): stacks only
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def dump_stacks(ospids: dict[int, int]) -> None:
    print("\n".join(link_states()), flush=True)
    for ospid in ospids.values():
        try:
            os.kill(ospid, signal.SIGUSR1)
        except OSError:
            pass
    time.sleep(1.0)  # the workers' dumps reach us through their forwarded output
    faulthandler.dump_traceback(all_threads=True)


# --- resources -----------------------------------------------------------------------------


def open_descriptors() -> int:
    """Open fds, less the memfds kept for received buffers that still live (to send them on
    without a copy; at most ``memfd.KEPT_FDS``, each closed when its buffer goes)."""
    return len(os.listdir("/proc/self/fd")) - memfd.kept_fds()


def writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("clustercore-writer")]


def settle(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` (links close on other threads)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- the run --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: random)")
    parser.add_argument("--seconds", type=float, default=90.0, help="start no round after this long")
    parser.add_argument("--rounds", type=int, default=None, help="at most this many rounds")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    log = lambda text: print(f"[torture] {text}", flush=True)  # noqa: E731
    log(f"seed {seed} (replay: python -m tests.torture --seed {seed})")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    cc.rmprocs(cc.addprocs(1), waitfor=30)  # the fork server and lazy imports are in place now
    fds, started = open_descriptors(), time.monotonic()
    seeds = random.Random(seed)
    totals = {"rounds": 0, "calls": 0, "tolerated": 0, "slowest": 0.0}
    while time.monotonic() - started < args.seconds and (args.rounds is None or totals["rounds"] < args.rounds):
        rnd = Round.plan(seeds.getrandbits(32))
        began = time.monotonic()
        try:
            run_round(rnd, log)
            if not settle(lambda: not writer_threads()):
                raise Failure(f"writer threads left: {writer_threads()}")
            if not settle(lambda: open_descriptors() <= fds):
                raise Failure(f"descriptors: {open_descriptors()} open, {fds} before the first round")
        except Failure as exc:
            log(f"FAILED round seed {rnd.seed} ({rnd}): {exc}")
            log(f"replay: python -m tests.torture --seed {seed} (round {totals['rounds'] + 1})")
            return 1
        totals["rounds"] += 1
        totals["calls"] += rnd.calls
        totals["tolerated"] += rnd.tolerated
        totals["slowest"] = max(totals["slowest"], rnd.slowest)
        log(
            f"round {totals['rounds']} seed {rnd.seed}: {rnd.nworkers} workers, {rnd.nthreads} threads, "
            f"fault {rnd.fault or 'none'}: {rnd.calls} calls ({rnd.tolerated} failed as allowed), "
            f"slowest {rnd.slowest:.2f} s, round {time.monotonic() - began:.1f} s"
        )
    log(
        f"passed: seed {seed}, {totals['rounds']} rounds, {totals['calls']} calls "
        f"({totals['tolerated']} failed as allowed by a fault), slowest call {totals['slowest']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
