"""Runs the selected measurements on the floor and on every peer.

Latency and throughput share one session of ``sizes.workers`` workers per
peer, all opened together, and sample them in interleaved rounds (see
:mod:`bench.rounds`): first latency, where the floor's ping-pong partner
joins them, then throughput; the sessions are closed after the last
throughput round. Only one contestant is busy at a time: a round trip, or
a whole map, finishes before the next starts, while the others sit idle
(blocked in a read, or for dask and ray, their own background timers).
Bandwidth then gets a fresh session per peer, closed before the next peer
starts, and start-up starts fresh sessions of its own, so no two peers'
workers are ever busy at once. A peer that is not installed is skipped
with a note; an exception in a measurement, or a failed start, is
recorded as an error for that cell and the run goes on without it.

A ``settle`` callback, if given, is called whenever processes may have
appeared: right after each contestant opens, after its warm-up, and before
every round. The split placement uses it to move the workers (see
:mod:`bench.placement`); it runs outside any timed call.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any

from bench import floor, measure, rpc
from bench.config import Sizes
from bench.peers import Peer, Session, Skip
from bench.rounds import Contestant, LatencyContestant, ThroughputContestant, round_order
from bench.tasks import noop

RPC = "minimal RPC"  # the reference row of the latency table (bench.rpc)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def meta(quick: bool) -> dict[str, Any]:
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "quick": quick,
    }


def _close(session: Session) -> dict[str, Any]:
    session.close()
    return {}


class Runner:
    def __init__(
        self,
        sizes: Sizes,
        only: tuple[str, ...],
        peers: list[Peer],
        quick: bool,
        settle: Callable[[], None] | None = None,
    ) -> None:
        self.sizes = sizes
        self.only = only
        self.peers = peers
        self.settle = settle or (lambda: None)
        self.results: dict[str, Any] = {"meta": meta(quick), "peers": {}, "errors": []}
        for m in only:
            self.results[m] = {}
        if "latency" in only:
            self.results["latency"] = {"unpinned": {}}

    # -- helpers -------------------------------------------------------------

    def _section(self, measurement: str) -> dict[str, Any]:
        sec: dict[str, Any] = self.results[measurement]
        return sec["unpinned"] if measurement == "latency" else sec

    def _fail(self, section: dict[str, Any], key: str, what: str, e: Exception) -> None:
        msg = f"{type(e).__name__}: {e}"
        section[key] = {"error": msg}
        self.results["errors"].append(f"{what}: {msg}")
        log(f"{what} failed:\n{traceback.format_exc()}")

    def _cell(self, section: dict[str, Any], key: str, what: str, fn: Callable[[], dict[str, Any]]) -> None:
        log(what)
        try:
            section[key] = fn()
        except Skip as e:
            section[key] = {"skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - one failing cell must not end the run
            self._fail(section, key, what, e)

    def _start(self, peer: Peer, measurements: Sequence[str]) -> Session | None:
        """A session for ``measurements``, or None (the error is recorded in each)."""
        log(f"{peer.name}: starting {self.sizes.workers} workers for {', '.join(measurements)}")
        try:
            return peer.start(self.sizes.workers)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
            self.results["errors"].append(f"{peer.name}: start: {msg}")
            log(f"{peer.name}: start failed:\n{traceback.format_exc()}")
            for m in measurements:
                self._section(m)[peer.name] = {"error": f"start failed: {msg}"}
            return None

    def _shut(self, name: str, session: Session) -> None:
        self._cell({}, "close", f"{name}: shutting down", lambda: _close(session))

    def _register(self, peer: Peer) -> bool:
        """List the peer in the report; True if it is to run."""
        info: dict[str, Any] = {"description": peer.description}
        if peer.startup_only:
            if "startup" not in self.only:
                return False
            info["startup_only"] = True
        self.results["peers"][peer.name] = info
        reason = peer.unavailable()
        if reason:
            info["skipped"] = reason
            log(f"{peer.name}: skipped ({reason})")
            per_session = () if peer.startup_only else ("latency", "throughput", "bandwidth")
            for m in (*per_session, "startup"):
                if m in self.only:
                    self._section(m)[peer.name] = {"skipped": reason}
            return False
        info["version"] = peer.version()
        return True

    # -- latency and throughput: everyone open at once, sampled in rounds -----

    def _warmed(self, measurement: str, name: str, make: Callable[[], Contestant]) -> Contestant | None:
        """``make()``, a contestant that warms up as it is made, or None (the error is recorded)."""
        log(f"{name}: {measurement} warm-up")
        try:
            c = make()
            self.settle()  # some peers start their processes only on first use
        except Exception as e:  # noqa: BLE001
            self._fail(self._section(measurement), name, f"{name}: {measurement} warm-up", e)
            return None
        return c

    def _latency_contestant(
        self, name: str, roundtrip: Callable[[], object], calls: int, warmup: int
    ) -> Contestant | None:
        """A warmed-up latency contestant taking ``calls`` samples over all rounds, or None."""
        s = self.sizes

        def make() -> LatencyContestant:
            c = LatencyContestant(
                name,
                roundtrip,
                max(1, calls // s.latency_rounds),
                s.latency_budget_s / s.latency_rounds,
                s.latency_min_per_round,
            )
            c.warm_up(warmup)
            return c

        return self._warmed("latency", name, make)

    def _open_floor(self, stack: ExitStack) -> Contestant | None:
        log("floor: TCP ping-pong partner")
        try:
            roundtrip = stack.enter_context(floor.pingpong())
        except Exception as e:  # noqa: BLE001
            self._fail(self._section("latency"), "floor", "floor: TCP ping-pong", e)
            return None
        self.settle()  # the partner is a process of its own
        n = self.sizes.floor_pingpongs
        return self._latency_contestant("floor", roundtrip, n, n // 10)

    def _open_rpc(self, stack: ExitStack) -> Contestant | None:
        log("reference: minimal Python RPC over a Unix socket pair")
        try:
            roundtrip = stack.enter_context(rpc.minimal_rpc(noop))
        except Exception as e:  # noqa: BLE001
            self._fail(self._section("latency"), RPC, "reference: minimal RPC", e)
            return None
        self.settle()  # the server is a process of its own
        s = self.sizes
        return self._latency_contestant(RPC, roundtrip, s.latency_calls, s.latency_warmup)

    def _open_session(self, stack: ExitStack, peer: Peer, measurements: Sequence[str]) -> Session | None:
        """A session closed when ``stack`` unwinds (last-opened first), or None."""
        session = self._start(peer, measurements)
        if session is not None:
            stack.callback(self._shut, peer.name, session)
            self.settle()  # its processes were just started
        return session

    def _play(self, measurement: str, contestants: Sequence[Contestant | None], rounds: int) -> None:
        """Sample every contestant in each round; one that raises drops out."""
        cells = self._section(measurement)
        live = [c for c in contestants if c is not None]
        for r in range(rounds):
            order = round_order(live, r)
            self.settle()
            log(f"{measurement} round {r + 1}/{rounds}: {', '.join(c.name for c in order)}")
            for c in order:
                try:
                    c.take_round(r)
                except Exception as e:  # noqa: BLE001 - the other contestants go on
                    self._fail(cells, c.name, f"{c.name}: {measurement} round {r + 1}", e)
                    live.remove(c)
        for c in live:
            cells[c.name] = c.summary()

    def run_rounds(self, peers: list[Peer]) -> None:
        """Latency (with the floor), then throughput, on one session per peer, all open together."""
        s = self.sizes
        phases = [m for m in ("latency", "throughput") if m in self.only]
        with ExitStack() as stack:
            latency: list[Contestant | None] = []
            if "latency" in phases:
                latency.append(self._open_floor(stack))
                latency.append(self._open_rpc(stack))
            sessions: list[tuple[str, Session]] = []
            for peer in peers:
                session = self._open_session(stack, peer, phases)
                if session is None:
                    continue
                sessions.append((peer.name, session))
                if "latency" in phases:
                    call = partial(session.call, noop)
                    latency.append(self._latency_contestant(peer.name, call, s.latency_calls, s.latency_warmup))
                    for label, f, args in session.latency_variants:  # the same session, other functions
                        name = f"{peer.name} {label}"
                        call = partial(session.call, f, *args)
                        latency.append(self._latency_contestant(name, call, s.latency_calls, s.latency_warmup))
            if "latency" in phases:
                self._play("latency", latency, s.latency_rounds)
            if "throughput" in phases:
                throughput = [
                    self._warmed("throughput", name, partial(ThroughputContestant.warmed_up, name, session, s))
                    for name, session in sessions
                ]
                self._play("throughput", throughput, s.throughput_rounds)

    # -- everything else: one peer at a time ---------------------------------

    def run_floor_bandwidth(self) -> None:
        s = self.sizes
        for reuse, key in ((True, "floor (reused buffer)"), (False, "floor (fresh buffer)")):
            self._cell(
                self.results["bandwidth"],
                key,
                f"{key}: socket echo",
                lambda reuse=reuse: floor.echo_bandwidth(  # type: ignore[misc]
                    s.bandwidth_bytes, reuse, s.bandwidth_warmup, s.bandwidth_repeats
                ),
            )

    def run_peer(self, peer: Peer) -> None:
        """Bandwidth on one fresh session, then start-up."""
        if "bandwidth" in self.only and not peer.startup_only:
            session = self._start(peer, ["bandwidth"])
            if session is not None:
                try:
                    self._cell(
                        self.results["bandwidth"],
                        peer.name,
                        f"{peer.name}: bandwidth",
                        lambda: measure.bandwidth(session, self.sizes),
                    )
                finally:
                    self._shut(peer.name, session)
        if "startup" in self.only:
            self._cell(
                self.results["startup"],
                peer.name,
                f"{peer.name}: start-up of {self.sizes.startup_workers} workers",
                lambda: measure.startup(peer, self.sizes),
            )

    def run(self) -> dict[str, Any]:
        ready = [p for p in self.peers if self._register(p)]
        if "latency" in self.only or "throughput" in self.only:
            self.run_rounds([p for p in ready if not p.startup_only])
        if "bandwidth" in self.only:
            self.run_floor_bandwidth()
        for peer in ready:
            self.run_peer(peer)
        return self.results
