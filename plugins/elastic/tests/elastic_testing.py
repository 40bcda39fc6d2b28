"""Helpers for the elastic plugin's tests: workers started by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clustercore_elastic import ElasticManager, listen

import clustercore as cc
from clustercore import testing


class HandStarted:
    """Workers started the way a user would: ``python -m clustercore worker --join``."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(
        self,
        address: tuple[str, int] | str,
        *,
        cookie: str | None = None,
        cookie_file: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> subprocess.Popen[str]:
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        cmd = [sys.executable, "-m", "clustercore", "worker", "--join", where, *args]
        if cookie_file is not None:
            cmd += ["--cookie-file", str(cookie_file)]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdin is not None
        if cookie_file is None:
            proc.stdin.write((cc.cluster_cookie() if cookie is None else cookie) + "\n")
        proc.stdin.close()
        proc.stdin = None  # communicate() later must not flush it
        self.procs.append(proc)
        return proc

    def leftovers(self, timeout: float = 30.0) -> list[int]:
        return testing.wait_until_gone([p.pid for p in self.procs], timeout)

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


@contextmanager
def listening(
    address: tuple[str, int] | str = ("127.0.0.1", 0), hand: HandStarted | None = None, **options: object
) -> Iterator[ElasticManager]:
    """An elastic manager on ``address``: no workers before, none left after; with ``hand``,
    every worker process the test started by hand has exited too."""
    with testing.clean_cluster():
        manager = listen(address, **options)  # type: ignore[arg-type]
        try:
            yield manager
        finally:
            manager.close()
    if hand is not None:
        survivors = hand.leftovers()
        assert survivors == [], f"worker processes survived the test: {survivors}"
