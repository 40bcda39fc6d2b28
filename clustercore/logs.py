"""Loggers that import :mod:`logging` on first use: a worker starts without it.

Every clustercore logger is a child of ``"clustercore"``, whose level comes
from ``CLUSTERCORE_LOG_LEVEL`` (default ``WARNING``) when the first message
is logged.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """Stands for ``logging.getLogger(name)`` until a method of it is used."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            self._logger = _real_logger(self._name)
        return getattr(self._logger, attr)


def _real_logger(name: str) -> Any:
    import logging
    import os

    level = os.environ.get("CLUSTERCORE_LOG_LEVEL")
    if level:
        logging.getLogger("clustercore").setLevel(level)
    return logging.getLogger(name)
