"""Runs the selected measurements on the floor and on every peer.

Each peer gets one session of ``sizes.workers`` workers for latency,
throughput and bandwidth, closed before the next peer starts, so peers
never compete for the two CPUs. Start-up starts fresh sessions. A peer
that is not installed is skipped with a note; an exception in a
measurement is recorded as an error for that cell and the run goes on.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import floor, measure
from bench.config import Sizes
from bench.peers import Peer, Session, Skip


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
    def __init__(self, sizes: Sizes, only: tuple[str, ...], peers: list[Peer], quick: bool) -> None:
        self.sizes = sizes
        self.only = only
        self.peers = peers
        self.results: dict[str, Any] = {"meta": meta(quick), "peers": {}, "errors": []}
        for m in only:
            self.results[m] = {}
        if "latency" in only:
            self.results["latency"] = {"unpinned": {}}

    # -- helpers -------------------------------------------------------------

    def _section(self, measurement: str) -> dict[str, Any]:
        sec: dict[str, Any] = self.results[measurement]
        return sec["unpinned"] if measurement == "latency" else sec

    def _cell(self, section: dict[str, Any], key: str, what: str, fn: Callable[[], dict[str, Any]]) -> None:
        log(what)
        try:
            section[key] = fn()
        except Skip as e:
            section[key] = {"skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - one failing cell must not end the run
            msg = f"{type(e).__name__}: {e}"
            section[key] = {"error": msg}
            self.results["errors"].append(f"{what}: {msg}")
            log(f"{what} failed:\n{traceback.format_exc()}")

    # -- the run -------------------------------------------------------------

    def run_floor(self) -> None:
        s = self.sizes
        if "latency" in self.only:
            self._cell(
                self.results["latency"]["unpinned"],
                "floor",
                "floor: TCP ping-pong",
                lambda: floor.pingpong_latency(s.floor_pingpongs, s.floor_pingpongs // 10),
            )
        if "bandwidth" in self.only:
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
        info: dict[str, Any] = {"description": peer.description}
        if peer.startup_only:
            if "startup" not in self.only:
                return
            info["startup_only"] = True
        self.results["peers"][peer.name] = info
        per_session = [m for m in ("latency", "throughput", "bandwidth") if m in self.only and not peer.startup_only]
        reason = peer.unavailable()
        if reason:
            info["skipped"] = reason
            log(f"{peer.name}: skipped ({reason})")
            for m in (*per_session, "startup"):
                if m in self.only:
                    self._section(m)[peer.name] = {"skipped": reason}
            return
        info["version"] = peer.version()
        if per_session:
            log(f"{peer.name}: starting {self.sizes.workers} workers")
            try:
                session = peer.start(self.sizes.workers)
            except Exception as e:  # noqa: BLE001
                msg = f"{type(e).__name__}: {e}"
                self.results["errors"].append(f"{peer.name}: start: {msg}")
                log(f"{peer.name}: start failed:\n{traceback.format_exc()}")
                for m in per_session:
                    self._section(m)[peer.name] = {"error": f"start failed: {msg}"}
            else:
                try:
                    if "latency" in self.only:
                        self._cell(
                            self.results["latency"]["unpinned"],
                            peer.name,
                            f"{peer.name}: latency",
                            lambda: measure.latency(session, self.sizes),
                        )
                    if "throughput" in self.only:
                        self._cell(
                            self.results["throughput"],
                            peer.name,
                            f"{peer.name}: throughput",
                            lambda: measure.throughput(session, self.sizes),
                        )
                    if "bandwidth" in self.only:
                        self._cell(
                            self.results["bandwidth"],
                            peer.name,
                            f"{peer.name}: bandwidth",
                            lambda: measure.bandwidth(session, self.sizes),
                        )
                finally:
                    self._cell({}, "close", f"{peer.name}: shutting down", lambda: _close(session))
        if "startup" in self.only:
            self._cell(
                self.results["startup"],
                peer.name,
                f"{peer.name}: start-up of {self.sizes.startup_workers} workers",
                lambda: measure.startup(peer, self.sizes),
            )

    def run(self) -> dict[str, Any]:
        self.run_floor()
        for peer in self.peers:
            self.run_peer(peer)
        return self.results
