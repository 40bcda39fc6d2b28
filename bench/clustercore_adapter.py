"""clustercore behind the same interface as the peers, written against API.md.

Assumptions (all from ``../shared/docs/API.md``):

* ``cc.addprocs(n) -> list[int]`` starts ``n`` local workers and returns
  their pids; ``cc.rmprocs(pids)`` removes them and waits until they are gone.
* ``cc.remotecall_fetch(f, pid, *args)`` is one round trip; the latency and
  bandwidth figures use the first worker's pid.
* ``cc.pmap(f, xs, batch_size=...)`` with ``batch_size`` ``"auto"`` and ``1``.
  While ``pmap`` does not exist yet those variants are skipped, not failed.
* The benchmark functions live in :mod:`bench.tasks`, pickled by reference;
  workers find the ``bench`` package because ``python -m bench`` puts the
  repository root on ``PYTHONPATH``, which local workers inherit.

While ``import clustercore`` fails, the peer is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.peers import Peer, Session, Skip


def _stop_fork_servers() -> None:
    """Make the next addprocs start from nothing (a driver's first addprocs)."""
    try:
        from clustercore_local import forkserver
    except ImportError:
        return
    with forkserver._servers_lock:
        servers = list(forkserver._servers.values())
        forkserver._servers.clear()
    for server in servers:
        server.close()


class _ClustercoreSession(Session):
    def __init__(self, n: int, cold: bool = False) -> None:
        super().__init__(n)
        import clustercore

        cc: Any = clustercore
        self.cc = cc
        if cold:
            _stop_fork_servers()
        self.pids: list[int] = list(cc.addprocs(n))
        if len(self.pids) != n:
            added = self.pids
            cc.rmprocs(added)
            raise RuntimeError(f"addprocs({n}) returned {added!r}")

    @property
    def latency_variants(self) -> tuple[tuple[str, Callable[..., Any], tuple[Any, ...]], ...]:  # type: ignore[override]
        from bench.by_value import VARIANTS

        return VARIANTS

    @property
    def map_variants(self) -> tuple[tuple[str, Any], ...]:  # type: ignore[override]
        return (("batch_size=auto", "auto"), ("batch_size=1", 1))

    def call(self, f: Callable[..., Any], *args: Any) -> Any:
        return self.cc.remotecall_fetch(f, self.pids[0], *args)

    def map(self, f: Callable[[Any], Any], xs: Sequence[Any], param: Any) -> list[Any]:
        pmap = getattr(self.cc, "pmap", None)
        if pmap is None:
            raise Skip("clustercore.pmap does not exist yet")
        try:
            return list(pmap(f, xs, batch_size=param))
        except NotImplementedError as e:
            raise Skip(f"clustercore.pmap: {e}") from e

    def close(self) -> None:
        self.cc.rmprocs(self.pids)


class Clustercore(Peer):
    name = "clustercore"
    description = "clustercore, local workers (addprocs)"
    module = "clustercore"

    def unavailable(self) -> str | None:
        try:
            import clustercore as cc
        except Exception as e:  # noqa: BLE001 - any import failure means "skip"
            return f"import clustercore failed: {type(e).__name__}: {e}"
        missing = [n for n in ("addprocs", "rmprocs", "remotecall_fetch") if not hasattr(cc, n)]
        if missing:
            return "clustercore lacks " + ", ".join(missing)
        return None

    def start(self, n: int) -> Session:
        return _ClustercoreSession(n)


class ClustercoreCold(Clustercore):
    """Start-up only: the driver's first addprocs, fork server included."""

    name = "clustercore (cold)"
    description = "clustercore, first addprocs of a driver (fork server started too)"
    startup_only = True

    def start(self, n: int) -> Session:
        return _ClustercoreSession(n, cold=True)
