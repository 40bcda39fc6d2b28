"""Drivers that run inside an allocation (an sbatch script, an salloc shell) get one step over it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from slurm_testing import PYTHON, check, result_of, run_sbatch, squeue_jobs, wait_queue_empty, write_driver

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(120)]


def test_driver_in_an_sbatch_script(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    result = run_sbatch(tmp_path, "--ntasks=4")
    check(result, 4)
    assert wait_queue_empty() == []


def test_driver_in_an_salloc_shell(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    driver = write_driver(tmp_path)
    done = subprocess.run(["salloc", "--ntasks=3", PYTHON, str(driver)], capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    check(result_of(done.stdout), 3)
    assert squeue_jobs() == [] or wait_queue_empty() == []


def test_too_many_tasks_for_the_allocation_fails_at_once(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        "import clustercore as cc\n"
        "try:\n"
        "    cc.addprocs('slurm', ntasks=5)\n"
        "except Exception as exc:\n"
        "    print('ERROR', type(exc).__name__, str(exc).replace(chr(10), ' '))\n"
    )
    done = subprocess.run(["salloc", "--ntasks=2", PYTHON, str(script)], capture_output=True, text=True, timeout=100)
    assert "ERROR SlurmError" in done.stdout, done.stdout + done.stderr
    assert "More processors requested than permitted" in done.stdout


def test_a_step_that_cannot_start_in_a_busy_allocation_times_out(fresh_slurm: dict[str, str], tmp_path: Path) -> None:
    """The first step holds every task; a second one waits, is shown, and only it is cancelled."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import os\n"
        "import clustercore as cc\n"
        "pids = cc.addprocs('slurm')\n"
        "try:\n"
        "    cc.addprocs('slurm', ntasks=1, launch_timeout=5)\n"
        "except TimeoutError as exc:\n"
        "    print('TIMEOUT', exc)\n"
        "print('STILL', [cc.remotecall_fetch(lambda: os.environ['SLURM_STEP_ID'], p) for p in pids])\n"
    )
    done = subprocess.run(["salloc", "--ntasks=2", PYTHON, str(script)], capture_output=True, text=True, timeout=100)
    assert "step PENDING (the allocation's resources are busy)" in done.stderr, done.stdout + done.stderr
    assert "the step was cancelled" in done.stdout, done.stdout + done.stderr
    assert "STILL ['0', '0']" in done.stdout, done.stdout + done.stderr
