"""Smoke test of ``bench/slurm_startup.py``: it runs against the test Slurm and prints its table."""

from __future__ import annotations

import subprocess

import pytest
from slurm_testing import PYTHON, REPO, wait_queue_empty

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def test_the_startup_benchmark_runs(fresh_slurm: dict[str, str]) -> None:
    done = subprocess.run(
        [PYTHON, "-m", "bench.slurm_startup", "--quick", "--ntasks", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "srun -n 4 python -c pass (floor)" in done.stdout
    assert "addprocs('slurm', ntasks=4) until ready" in done.stdout
    assert wait_queue_empty() == []
