"""Forwarding workers' output: the one printer thread that prints pushed lines."""

from __future__ import annotations

import threading

from clustercore.engine import launching


def test_the_printer_survives_a_line_it_cannot_print() -> None:
    printed: list[str] = []
    finished = threading.Semaphore(0)

    def watcher(text: str) -> None:
        if "boom" in text:
            raise RuntimeError("a watcher that fails once")
        printed.append(text)

    launching.output_watchers.append(watcher)
    try:
        printer = launching._Printer()
        printer.print("From worker 2:\tboom", finished.release)
        for i in range(3):
            printer.print(f"From worker 3:\tline {i}", finished.release)
        for _ in range(4):
            assert finished.acquire(timeout=30)  # done() for every line, the failed one too
        assert printed == [f"From worker 3:\tline {i}" for i in range(3)]
    finally:
        launching.output_watchers.remove(watcher)
