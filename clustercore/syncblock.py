"""``sync()``: wait for every Future started inside a block (Julia's ``@sync``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Blocks(threading.local):
    def __init__(self) -> None:
        self.stack: list[list[Any]] = []


_blocks = _Blocks()


def record(fut: Any) -> None:
    """Called for each Future this thread starts; kept if a ``sync`` block is open."""
    stack = _blocks.stack
    if stack:
        stack[-1].append(fut)


@contextmanager
def sync() -> Iterator[None]:
    """On exit, wait for every Future started in the block by this thread.

    Failures are raised together as an ``ExceptionGroup``; an exception from
    the block itself propagates once the wait is over.
    """
    started: list[Any] = []
    _blocks.stack.append(started)
    try:
        yield
    finally:
        _blocks.stack.pop()
        errors = []
        for fut in started:
            try:
                fut.fetch()
            except Exception as exc:  # noqa: BLE001 - collected and raised together
                errors.append(exc)
    if errors:
        raise ExceptionGroup(f"{len(errors)} of {len(started)} calls in the sync block failed", errors)
