"""Fixtures for the Slurm plugin's tests, against the real Slurm of ``make services``.

- Tests marked ``slurm`` need the single-node cluster, ``slurm3`` the
  three-node one; collection puts all ``slurm`` tests before the ``slurm3``
  ones so the cluster switches mode (``tests/services/slurm up 3``, a few
  seconds, as root) at most once.
- Without that Slurm (``make services`` as root starts it; ``make test`` runs
  it first) these tests skip, saying so, and FAIL when ``CI`` is set.
- ``fresh_slurm``: no workers before, none after; every worker process the
  test started has exited and no clustercore job is left in ``squeue``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clustercore_slurm import SlurmManager, workers
from slurm_testing import SlurmCluster, wait_queue_empty, wait_until_gone

from clustercore import WorkerConfig
from clustercore.testing import clean_cluster, ship_test_modules_by_value

__all__ = ["ship_test_modules_by_value"]  # a fixture: pytest finds it here


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the single-node Slurm of `make services`")
    config.addinivalue_line("markers", "slurm3: needs the three-node Slurm (tests/services/slurm up 3)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def mode(item: pytest.Item) -> int:
        return 2 if item.get_closest_marker("slurm3") else 1 if item.get_closest_marker("slurm") else 0

    items.sort(key=mode)  # stable: file order is kept within each mode


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    return SlurmCluster()


@pytest.fixture
def slurm(request: pytest.FixtureRequest, slurm_cluster: SlurmCluster) -> dict[str, str]:
    """The cluster this test's marker asks for (``slurm3``: three nodes), up; its env vars."""
    return slurm_cluster.ensure(3 if request.node.get_closest_marker("slurm3") else 1)


@pytest.fixture
def fresh_slurm(slurm: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """No workers and an empty queue before; after: workers removed, their processes and jobs gone.

    Every process the test's workers ran as (the worker and its task wrapper) is recorded when
    the worker registers, and must have exited by the end: the simulated nodes are other hosts
    by name, but share this machine's processes.
    """
    assert wait_queue_empty() == [], "a previous test left jobs in the queue"
    started: list[int] = []
    register = workers.register

    def recording_register(manager: SlurmManager, pid: int, config: WorkerConfig) -> None:
        register(manager, pid, config)
        found = manager.steps.lookup(config)
        started.extend(p for p in (config.ospid, found and found[1].hello and found[1].hello.shell_pid) if p)

    monkeypatch.setattr(workers, "register", recording_register)
    with clean_cluster(60, check_processes=False):
        yield slurm
    assert wait_until_gone(started) == []
    assert wait_queue_empty() == []
