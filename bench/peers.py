"""Adapters that give every system the same small interface.

A :class:`Peer` says whether it can run here (``unavailable()``) and starts a
:class:`Session` of ``n`` worker processes. A session makes one blocking
call (``call``), maps a function over a list with a chosen batching
(``map``), and shuts down, leaving no process behind (``close``).
``map_variants`` lists the batchings worth trying, as ``(label, param)``.

Peers: multiprocessing.Pool (the platform default start method, fork on
Linux), concurrent.futures.ProcessPoolExecutor with spawn and with fork,
loky, dask.distributed LocalCluster (processes, one thread each) and ray.
The clustercore adapter lives in :mod:`bench.clustercore_adapter`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import multiprocessing as mp
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.tasks import apply_batch, noop, wait_barrier

AUTO = "auto"


class Skip(Exception):
    """This measurement cannot run with this peer (reported, not an error)."""


def pool_auto_chunksize(n_items: int, n_workers: int) -> int:
    """multiprocessing.Pool.map's own heuristic, for peers that have none."""
    return max(1, math.ceil(n_items / (n_workers * 4)))


def chunks(xs: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [xs[i : i + size] for i in range(0, len(xs), size)]


class Session:
    """A running set of workers. Subclasses implement the three calls."""

    map_variants: tuple[tuple[str, Any], ...] = ()
    # more latency rows on this session: (label, function, arguments), timed like noop
    latency_variants: tuple[tuple[str, Callable[..., Any], tuple[Any, ...]], ...] = ()

    def __init__(self, n: int) -> None:
        self.n = n

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Peer:
    name = ""
    description = ""
    startup_only = False  # True: a start-up variant only, not a peer of its own
    module = ""  # the import that must work for this peer to run

    def unavailable(self) -> str | None:
        """None if the peer can run here, else why it is skipped."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.module} not installed"
        return None

    def version(self) -> str:
        if not self.module:
            return ""
        try:
            mod = importlib.import_module(self.module)
        except Exception:  # noqa: BLE001 - a version string is best effort
            return ""
        return str(getattr(mod, "__version__", ""))

    def start(self, n: int) -> Session:
        raise NotImplementedError


# multiprocessing.Pool -------------------------------------------------------


class _PoolSession(Session):
    def __init__(self, n: int, method: str | None) -> None:
        super().__init__(n)
        ctx = mp.get_context(method)
        self.pool = ctx.Pool(n)

    @property
    def map_variants(self) -> tuple[tuple[str, Any], ...]:  # type: ignore[override]
        return (
            ("chunksize=1", 1),
            ("chunksize=100", 100),
            ("chunksize=1000", 1000),
            ("chunksize=auto", None),
        )

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.pool.apply(f, args)

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        return self.pool.map(f, xs, chunksize=param)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class MultiprocessingPool(Peer):
    name = "mp.Pool"
    description = "multiprocessing.Pool, default start method"

    def __init__(self, method: str | None = None) -> None:
        self.method = method
        if method:
            self.name = f"mp.Pool({method})"

    def version(self) -> str:
        return mp.get_start_method(allow_none=False) if self.method is None else self.method

    def start(self, n: int) -> Session:
        return _PoolSession(n, self.method)


# concurrent.futures / loky --------------------------------------------------


class _ExecutorSession(Session):
    def __init__(self, n: int, executor: Any) -> None:
        super().__init__(n)
        self.executor = executor

    @property
    def map_variants(self) -> tuple[tuple[str, Any], ...]:  # type: ignore[override]
        return (
            ("chunksize=1", 1),
            ("chunksize=100", 100),
            ("chunksize=1000", 1000),
            ("chunksize=auto*", AUTO),
        )

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(f, *args).result()

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        size = pool_auto_chunksize(len(xs), self.n) if param == AUTO else param
        return list(self.executor.map(f, xs, chunksize=size))

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class ProcessPool(Peer):
    description = "concurrent.futures.ProcessPoolExecutor"

    def __init__(self, method: str) -> None:
        self.method = method
        self.name = f"PPE({method})"

    def version(self) -> str:
        return self.method

    def start(self, n: int) -> Session:
        return _ExecutorSession(n, ProcessPoolExecutor(n, mp_context=mp.get_context(self.method)))


class ProcessPoolAllUp(Peer):
    """PPE(spawn) start-up with every worker running, for a like-for-like figure.

    ProcessPoolExecutor with spawn starts its processes lazily (one per
    submit that finds no idle worker), so its first result comes back from
    one fresh process while ``addprocs(4)`` returns with four. Here four
    calls are submitted and an initializer barrier holds until all four
    workers have started.
    """

    name = "PPE(spawn) all up"
    description = "ProcessPoolExecutor(spawn), start-up until all workers run"
    startup_only = True

    def version(self) -> str:
        return "spawn"

    def start(self, n: int) -> Session:
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(n + 1)
        ex = ProcessPoolExecutor(n, mp_context=ctx, initializer=wait_barrier, initargs=(barrier,))
        try:
            for _ in range(n):
                ex.submit(noop)
            barrier.wait(120)
        except BaseException:
            barrier.abort()
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        return _ExecutorSession(n, ex)


class Loky(Peer):
    name = "loky"
    description = "loky.ProcessPoolExecutor (a fresh one, not the reusable singleton)"
    module = "loky"

    def start(self, n: int) -> Session:
        import loky

        return _ExecutorSession(n, loky.ProcessPoolExecutor(max_workers=n))


# dask.distributed -----------------------------------------------------------


class _DaskSession(Session):
    map_variants = (("tasks of 1", 1), ("tasks of 1000", 1000), ("tasks of auto*", AUTO))

    def __init__(self, n: int) -> None:
        super().__init__(n)
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        try:
            self.client = Client(self.cluster)
        except BaseException:
            self.cluster.close()
            raise

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        with warnings.catch_warnings():  # "Sending large graph": the bandwidth echo, on purpose
            warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
            return self.client.submit(f, *args, pure=False).result()

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        if param == 1:
            return self.client.gather(self.client.map(f, xs, pure=False))
        size = pool_auto_chunksize(len(xs), self.n) if param == AUTO else param
        parts = self.client.gather(self.client.map(apply_batch, [f] * len(xs[::size]), chunks(xs, size), pure=False))
        return [y for part in parts for y in part]

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self.cluster.close()


class Dask(Peer):
    name = "dask"
    description = "dask.distributed LocalCluster, processes, 1 thread per worker"
    module = "distributed"

    def start(self, n: int) -> Session:
        return _DaskSession(n)


# ray ------------------------------------------------------------------------


class _RaySession(Session):
    map_variants = (("tasks of 1", 1), ("tasks of 1000", 1000), ("tasks of auto*", AUTO))

    def __init__(self, n: int) -> None:
        super().__init__(n)
        import ray

        self.ray = ray
        ray.init(num_cpus=n, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        self._remote: dict[Any, Any] = {}

    def _r(self, f: Callable[..., Any]) -> Any:
        if f not in self._remote:
            self._remote[f] = self.ray.remote(num_cpus=1)(f)
        return self._remote[f]

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.ray.get(self._r(f).remote(*args))

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        if param == 1:
            rf = self._r(f)
            return self.ray.get([rf.remote(x) for x in xs])
        size = pool_auto_chunksize(len(xs), self.n) if param == AUTO else param
        rb = self._r(apply_batch)
        parts = self.ray.get([rb.remote(f, c) for c in chunks(xs, size)])
        return [y for part in parts for y in part]

    def close(self) -> None:
        self.ray.shutdown()


class Ray(Peer):
    name = "ray"
    description = "ray, local, num_cpus = workers"
    module = "ray"

    def start(self, n: int) -> Session:
        return _RaySession(n)


def all_peers() -> list[Peer]:
    """Every peer this suite knows, in report order (clustercore first)."""
    from bench.clustercore_adapter import Clustercore, ClustercoreCold

    return [
        Clustercore(),
        ClustercoreCold(),
        MultiprocessingPool(),
        ProcessPool("spawn"),
        ProcessPool("fork"),
        ProcessPoolAllUp(),
        Loky(),
        Dask(),
        Ray(),
    ]
