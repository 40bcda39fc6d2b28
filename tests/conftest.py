"""Shared fixtures: real local workers, and a check that none outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import cloudpickle
import pytest

import clustercore as cc
from clustercore.engine.cluster import PGRP
from clustercore.testing import wait_until_gone


@pytest.fixture(autouse=True)
def _ship_test_modules_by_value(request: pytest.FixtureRequest) -> None:
    """Workers cannot import test modules: send their functions by value, as for ``__main__``."""
    module = request.module
    if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)


def worker_ospids() -> list[int]:
    return [w.ospid for w in PGRP.workers.values() if w.ospid]


@pytest.fixture
def fresh() -> Iterator[None]:
    """Run a test with no workers, and remove (and check the exit of) every worker it adds."""
    assert cc.nprocs() == 1, f"a previous test left workers: {cc.workers()}"
    launched: list[int] = []
    yield_start = set(PGRP.workers)
    try:
        yield
    finally:
        launched = [w.ospid for p, w in PGRP.workers.items() if p not in yield_start and w.ospid]
        if len(cc.procs()) > 1:
            cc.rmprocs(cc.workers(), waitfor=30)
    assert wait_until_gone(launched) == []


@pytest.fixture
def two(fresh: None) -> list[int]:
    """Two fresh local workers."""
    return cc.addprocs(2)


@pytest.fixture(scope="module")
def shared_workers() -> Iterator[list[int]]:
    """Two local workers shared by a module's tests that do not break them."""
    assert cc.nprocs() == 1, f"a previous test left workers: {cc.workers()}"
    pids = cc.addprocs(2)
    ospids = worker_ospids()
    yield pids
    cc.rmprocs(cc.workers(), waitfor=30)
    assert wait_until_gone(ospids) == []
