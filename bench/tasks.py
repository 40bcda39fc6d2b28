"""The functions the benchmarks send to workers.

They live in an importable module (not ``__main__``) so every peer pickles
them by reference: the payload of a call is a module path, not code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def noop() -> None:
    """The empty call timed by the latency benchmark."""
    return None


def identity(x: Any) -> Any:
    """Send a value back unchanged (bandwidth echo)."""
    return x


def inc(x: int) -> int:
    """The tiny task of the throughput benchmark."""
    return x + 1


def apply_batch(f: Callable[[Any], Any], chunk: Sequence[Any]) -> list[Any]:
    """Run ``f`` over one chunk: batching for peers with no chunksize of their own."""
    return [f(x) for x in chunk]


def wait_barrier(barrier: Any) -> None:
    """Worker initializer: block until every worker of the pool has started."""
    barrier.wait(120)
