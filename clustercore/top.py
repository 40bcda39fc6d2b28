"""``clustercore top``: a live table of a running driver's cluster, in the terminal.

It attaches to a driver of this user (:mod:`clustercore.attach`), asks it for
``status()`` every ``--interval`` seconds and draws one row per process with
`rich <https://github.com/Textualize/rich>`_. Keys: ``s`` next sort column, ``j``/``k``
(or the arrows) move the selection, ``t`` shows the selected process's calls in flight
with their tracebacks (any key goes back), ``q`` quits. ``--once`` prints the table
(and, with ``--calls``, the tracebacks of the processes running the oldest calls)
once, for scripts and tests.
"""

from __future__ import annotations

import argparse
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.markup import escape

from .attach import Attached, attach
from .clusterstatus import CallInFlight, WorkerStatus

SORTS: dict[str, tuple[str, Callable[[WorkerStatus], Any], bool]] = {
    # key: (heading, sort key, largest first)
    "oldest": ("oldest call", lambda r: r.oldest_call.age if r.oldest_call else -1.0, True),
    "pid": ("pid", lambda r: r.pid, False),
    "calls": ("calls/s", lambda r: r.calls_per_s, True),
    "cpu": ("CPU %", lambda r: r.cpu_percent, True),
    "memory": ("RSS", lambda r: r.rss, True),
    "bytes": ("MB/s", lambda r: r.bytes_in_per_s + r.bytes_out_per_s, True),
}
STUCK_AFTER = 60.0  # seconds: an older call is drawn in red


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a positive number of seconds, not {text}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clustercore top", description="A live view of a running driver's cluster.")
    parser.add_argument("--pid", type=int, help="the driver's os pid (default: the only attachable driver)")
    parser.add_argument("--interval", type=_seconds, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--sort", choices=sorted(SORTS), default="oldest", help="the column rows are sorted by")
    parser.add_argument("--once", action="store_true", help="print the table once and exit")
    parser.add_argument(
        "--calls", action="store_true", help="with --once: also the tracebacks of the calls in flight on the worst rows"
    )
    parser.add_argument("--timeout", type=_seconds, default=2.0, help="seconds a worker has to answer (default 2)")
    args = parser.parse_args(argv)
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=200)  # a pipe or file: no columns cut short
    try:
        link = attach(args.pid)
    except (LookupError, OSError, ConnectionError) as exc:
        print(f"clustercore top: {exc}", file=sys.stderr)
        return 1
    with link:
        try:
            return _once(link, console, args) if args.once else _live(link, console, args)
        except (OSError, EOFError) as exc:  # ConnectionError included: the driver went away
            print(f"clustercore top: lost the driver (os pid {link.driver.ospid}): {exc}", file=sys.stderr)
            return 1


def _once(link: Attached, console: Any, args: argparse.Namespace) -> int:
    rows = link.status(timeout=args.timeout)
    console.print(render_table(rows, args.sort, None, link.driver.ospid))
    if args.calls:
        busy = sorted((r for r in rows if r.calls_in_flight), key=SORTS["oldest"][1], reverse=True)[:3]
        for row in busy:
            try:
                calls = link.calls_in_flight(row.pid, timeout=args.timeout)
            except TimeoutError as exc:
                console.print(escape(str(exc)))
                continue
            console.print(render_calls(row.pid, calls))
    return 0


def _live(link: Attached, console: Any, args: argparse.Namespace) -> int:
    from rich.live import Live

    sorts = list(SORTS)
    sort, selected = args.sort, 0
    rows: list[WorkerStatus] = []
    with _keys() as read_key, Live(console=console, screen=True, auto_refresh=False) as live:
        next_refresh = 0.0
        while True:
            now = time.monotonic()
            if now >= next_refresh:
                rows = sorted(link.status(timeout=args.timeout), key=SORTS[sort][1], reverse=SORTS[sort][2])
                selected = min(selected, max(len(rows) - 1, 0))
                fits = max(3, console.size.height - 9)  # the title, header, caption and borders take the rest
                live.update(render_table(rows, sort, selected, link.driver.ospid, fits), refresh=True)
                next_refresh = now + args.interval
            key = read_key(max(0.0, next_refresh - time.monotonic()))
            if key in ("q", "\x03"):
                return 0
            if key == "s":
                sort = sorts[(sorts.index(sort) + 1) % len(sorts)]
                next_refresh = 0.0
            elif key in ("j", "\x1b[B") and rows:
                selected = min(selected + 1, len(rows) - 1)
                next_refresh = 0.0
            elif key in ("k", "\x1b[A"):
                selected = max(selected - 1, 0)
                next_refresh = 0.0
            elif key in ("t", "\r", "\n") and rows:
                pid = rows[selected].pid
                try:
                    shown: Any = render_calls(pid, link.calls_in_flight(pid, timeout=args.timeout))
                except TimeoutError as exc:
                    shown = escape(str(exc))
                live.update(shown, refresh=True)
                read_key(None)  # until a key
                next_refresh = 0.0


def render_table(
    rows: list[WorkerStatus], sort: str, selected: int | None, driver_ospid: int, limit: int | None = None
) -> Any:
    """The table of processes, sorted by ``sort`` (a key of ``SORTS``), ``selected`` highlighted;
    at most ``limit`` rows, a window that keeps the selected one in view."""
    from rich.table import Table

    heading, key, reverse = SORTS[sort]
    rows = sorted(rows, key=key, reverse=reverse)
    busy = sum(1 for r in rows if r.calls_in_flight)
    total = len(rows)
    first = 0
    if limit is not None and total > limit:
        first = max(0, min((selected or 0) - limit // 2, total - limit))
        rows = rows[first : first + limit]
    shown = f"  rows {first + 1}-{first + len(rows)} of {total}" if len(rows) < total else ""
    table = Table(
        title=f"clustercore: driver os pid {driver_ospid}, {total - 1} workers, {busy} busy",
        caption=escape(f"sorted by {heading}{shown}  [s] sort  [j/k] select  [t] tracebacks  [q] quit"),
        expand=False,
    )
    for name, justify in (
        ("pid", "right"),
        ("host", "left"),
        ("manager", "left"),
        ("state", "left"),
        ("in flight", "right"),
        ("oldest call", "left"),
        ("age", "right"),
        ("calls/s", "right"),
        ("MB/s in", "right"),
        ("MB/s out", "right"),
        ("CPU %", "right"),
        ("RSS MB", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i, row in enumerate(rows, first):
        oldest = row.oldest_call
        style = "reverse" if i == selected else ""
        state_style = {"busy": "yellow", "unresponsive": "bold red", "terminating": "magenta"}.get(row.state, "green")
        age_style = "bold red" if oldest and oldest.age >= STUCK_AFTER else ""
        table.add_row(
            str(row.pid),
            escape(row.host),
            escape(row.manager or "driver"),
            f"[{state_style}]{row.state}[/]",
            str(len(row.calls_in_flight)),
            escape(oldest.function) if oldest else "",
            f"[{age_style}]{_age(oldest.age)}[/]" if oldest and age_style else (_age(oldest.age) if oldest else ""),
            f"{row.calls_per_s:.1f}",
            f"{row.bytes_in_per_s / 1e6:.2f}",
            f"{row.bytes_out_per_s / 1e6:.2f}",
            f"{row.cpu_percent:.0f}",
            f"{row.rss / 2**20:.0f}",
            style=style,
        )
    return table


def render_calls(pid: int, calls: list[CallInFlight]) -> Any:
    """The calls in flight on ``pid``, oldest first, each with its traceback."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    if not calls:
        return Panel(Text("no calls in flight"), title=f"pid {pid}")
    panels = [
        Panel(
            Text(call.traceback.rstrip() or "(no stack)"),
            title=escape(f"pid {pid}: {call.function}, running {_age(call.age)}"),
        )
        for call in calls
    ]
    return Group(*panels)


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


@contextmanager
def _keys() -> Iterator[Callable[[float | None], str]]:
    """Read single keys from the terminal (cbreak mode) with a timeout; ``""`` when none came."""
    import os
    import termios
    import tty

    fd = sys.stdin.fileno()
    interactive = os.isatty(fd)
    saved = termios.tcgetattr(fd) if interactive else None
    if interactive:
        tty.setcbreak(fd)

    def read_key(timeout: float | None) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return ""
        key = os.read(fd, 8).decode(errors="replace")
        return key if key else "q"  # end of input: quit

    try:
        yield read_key
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
