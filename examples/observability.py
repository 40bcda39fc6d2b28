"""Draw the README's pictures of a running cluster: ``clustercore top``'s table (SVG,
rendered by rich) and a ``trace()`` of a pmap with a straggler (PNG, drawn by headless
Chromium). Run from the repository's root: ``python examples/observability.py [OUTDIR]``
(default ``docs/img``)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import clustercore as cc
from clustercore.top import render_calls, render_table


def simulate(seed: int) -> float:
    """A task whose cost varies; seed 97 is the straggler."""
    deadline = time.perf_counter() + (0.25 if seed == 97 else 0.004 + (seed % 7) * 0.001)
    x = 0.0
    while time.perf_counter() < deadline:
        x += 1.0
    return x


def wait_for_a_lock_nobody_releases(ch: cc.RemoteChannel) -> None:
    cc.take(ch)  # the stuck call


def keep_busy(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def main(outdir: Path) -> None:
    from rich.console import Console

    outdir.mkdir(parents=True, exist_ok=True)
    pids = cc.addprocs(8)
    with cc.trace() as t:
        cc.pmap(simulate, range(200), batch_size=4)
    t.save(outdir / "trace.png")
    ch = cc.RemoteChannel(lambda: cc.Channel(1), 1)
    stuck = cc.remotecall(wait_for_a_lock_nobody_releases, pids[5], ch)
    time.sleep(3.0)  # the stuck call is the oldest by far
    busy = [cc.remotecall(keep_busy, p, 3.0) for p in pids[:3]]
    background = threading.Thread(target=lambda: [cc.remotecall_fetch(sum, pids[3], range(10**5)) for _ in range(3000)])
    background.start()
    cc.status()
    time.sleep(1.5)
    rows = cc.status()
    console = Console(record=True, width=150, force_terminal=True)
    console.print(render_table(rows, "oldest", 0, __import__("os").getpid()))
    console.print(render_calls(pids[5], cc.calls_in_flight(pids[5])))
    console.save_svg(str(outdir / "top.svg"), title="clustercore top")
    background.join()
    cc.put(ch, None)
    cc.fetch(stuck)
    for f in busy:
        cc.fetch(f)
    cc.rmprocs(cc.workers())
    print(f"wrote {outdir / 'top.svg'} and {outdir / 'trace.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
