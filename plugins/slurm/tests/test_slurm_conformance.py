"""The core's manager conformance suite, run against SlurmManager on one node and on three."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from clustercore_slurm import SlurmManager
from slurm_testing import squeue_jobs

import clustercore as cc
from clustercore.testing import ManagerConformance, pid_alive


class TestSlurmConformance(ManagerConformance):
    pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]
    nworkers = 4

    @pytest.fixture
    def make_manager(self, fresh_slurm: dict[str, str]) -> Callable[[int], cc.ClusterManager]:
        return lambda n: SlurmManager(ntasks=n)

    def leftovers(self, tag: str) -> list[str]:
        """Tagged processes (the nodes share this machine's), and any job in the queue."""
        return super().leftovers(tag) + [f"slurm job {job}" for job in squeue_jobs()]

    def bad_manager_arguments(self) -> list[Callable[[], Any]]:
        return [
            lambda: SlurmManager(ntasks=0),
            lambda: SlurmManager(time="soon"),
            lambda: SlurmManager(srun_flags=["--output=x.log"]),
            lambda: cc.addprocs("slurm", ntasks=2, nodez=2),
        ]


class TestSlurmThreeNodeConformance(TestSlurmConformance):
    pytestmark = [pytest.mark.slurm3, pytest.mark.timeout(120)]
    nworkers = 3

    @pytest.fixture
    def make_manager(self, fresh_slurm: dict[str, str]) -> Callable[[int], cc.ClusterManager]:
        return lambda n: SlurmManager(ntasks=n, nodes=3)

    def process_alive(self, hostname: str, ospid: int) -> bool:
        return pid_alive(ospid)  # the simulated nodes are network namespaces: one pid space with ours
