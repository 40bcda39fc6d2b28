"""clustercore-local: workers as processes on this machine (Julia's LocalManager)."""

from __future__ import annotations

from typing import Any

__all__ = ["LocalManager"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the fork server (clustercore_local.forkserver) starts without the manager.
    if name == "LocalManager":
        from .manager import LocalManager

        return LocalManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
