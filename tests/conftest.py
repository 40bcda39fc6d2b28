"""Shared fixtures: real local workers, and a check that none outlives its test.

Test modules travel to the workers by value (``ship_test_modules_by_value``, autouse
here), as a plugin's tests get them from :mod:`clustercore.testing`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import clustercore as cc
from clustercore.testing import clean_cluster, ship_test_modules_by_value

__all__ = ["ship_test_modules_by_value"]  # a fixture: pytest finds it here


@pytest.fixture
def fresh() -> Iterator[None]:
    """Run a test with no workers, and remove (and check the exit of) every worker it adds."""
    with clean_cluster():
        yield


@pytest.fixture
def two(fresh: None) -> list[int]:
    """Two fresh local workers."""
    return cc.addprocs(2)


@pytest.fixture(scope="module")
def shared_workers() -> Iterator[list[int]]:
    """Two local workers shared by a module's tests that do not break them."""
    with clean_cluster():
        yield cc.addprocs(2)
