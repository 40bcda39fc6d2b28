"""Fixtures: an elastic manager on loopback, workers started by hand, leak checks."""

from __future__ import annotations

from collections.abc import Iterator

import cloudpickle
import pytest
from clustercore_elastic import ElasticManager, listen
from elastic_testing import HandStarted

import clustercore as cc
from clustercore import testing


@pytest.fixture(autouse=True)
def _ship_test_modules_by_value(request: pytest.FixtureRequest) -> None:
    """Workers cannot import test modules: send their functions by value, as for ``__main__``."""
    for module in (request.module, testing):
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)


@pytest.fixture
def hand() -> Iterator[HandStarted]:
    started = HandStarted()
    try:
        yield started
    finally:
        started.reap()


@pytest.fixture
def manager(hand: HandStarted) -> Iterator[ElasticManager]:
    """An elastic manager on 127.0.0.1 (a free port); no workers before, none left after, and
    every worker process the test started has exited."""
    assert cc.procs() == [1], f"workers left over by an earlier test: {cc.procs()}"
    m = listen(("127.0.0.1", 0))
    try:
        yield m
    finally:
        m.close()
        left = [p for p in cc.procs() if p != 1]
        if left:
            cc.rmprocs(left, waitfor=30)
        survivors = hand.leftovers()
        assert survivors == [], f"worker processes survived the test: {survivors}"
