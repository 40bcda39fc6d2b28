"""Fixtures: an elastic manager on loopback, workers started by hand, leak checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clustercore_elastic import ElasticManager
from elastic_testing import HandStarted, listening

from clustercore.testing import ship_test_modules_by_value

__all__ = ["ship_test_modules_by_value"]  # a fixture: pytest finds it here


@pytest.fixture
def hand() -> Iterator[HandStarted]:
    started = HandStarted()
    try:
        yield started
    finally:
        started.reap()


@pytest.fixture
def manager(hand: HandStarted) -> Iterator[ElasticManager]:
    """An elastic manager on 127.0.0.1 (a free port); see :func:`elastic_testing.listening`."""
    with listening(hand=hand) as m:
        yield m
