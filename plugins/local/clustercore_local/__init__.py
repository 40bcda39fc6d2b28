"""clustercore-local: workers as processes on this machine (Julia's LocalManager)."""

from .manager import LocalManager

__all__ = ["LocalManager"]
