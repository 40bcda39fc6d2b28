"""The fork server's relayed output, as the driver hands it on: whole lines, holds and releases."""

from __future__ import annotations

import threading

from clustercore_local.output import WorkerOutput

LINE = b"x" * 1023 + b"\n"


def collect(out: WorkerOutput) -> list[tuple[bytes, object]]:
    taken: list[tuple[bytes, object]] = []
    out.deliver_lines(lambda line, done: taken.append((line, done)), lambda: None)
    return taken


def test_a_lone_carriage_return_stays_inside_its_line() -> None:
    # A progress bar redraws with \r: one line, as readline (spawned, SSH, Slurm workers) reads it.
    out = WorkerOutput(1, lambda key, held: None)
    taken = collect(out)
    out.feed(b"10%\r20%\r30%\ndone\npart")
    out.end()
    assert [line for line, _ in taken] == [b"10%\r20%\r30%\n", b"done\n", b"part"]


def test_the_server_hears_holds_and_releases_in_the_order_they_were_decided() -> None:
    # The relay thread decides to hold; before its word reaches the server, the printer
    # works the lines off and releases. The server must end where the driver's state is.
    sent: list[bool] = []
    deciding = threading.Event()
    printed = threading.Event()

    def hold(key: int, held: bool) -> None:
        if held:
            deciding.set()
            printed.wait(1)  # the printer's turn, if it can take it now (it cannot: it waits for us)
        sent.append(held)

    out = WorkerOutput(7, hold)
    taken = collect(out)
    out.feed(LINE * 900)  # ~900 KiB handed on, not printed: no hold yet
    first = [done for _, done in taken]
    taken.clear()

    def printer() -> None:
        deciding.wait(10)
        for done in first:
            done()  # type: ignore[operator]
        printed.set()

    thread = threading.Thread(target=printer)
    thread.start()
    out.feed(LINE * 200)  # past 1 MiB: hold
    thread.join(10)
    for _, done in taken:
        done()  # type: ignore[operator]
    assert sent and sent[-1] == out._held  # the server's last word is the driver's state
    assert not out._held and out._outstanding == 0
