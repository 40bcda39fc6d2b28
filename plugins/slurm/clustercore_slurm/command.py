"""The srun command lines: the worker step, its dry run, and the task wrapper.

Every task runs ``sh -c WRAPPER sh <worker argv>``: the wrapper prints who
and where it is, sends the worker's stderr to stdout (so srun's own stderr
carries only Slurm's messages), runs the worker, and reports its exit code.
The worker inherits the task's stdin, which srun broadcasts from ours: the
cookie is its first line and EOF is the worker's lifeline.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from .lines import EXIT_MARKER, TASK_MARKER

TASK_WRAPPER = (
    f'echo "{TASK_MARKER}:$SLURM_PROCID:$SLURMD_NODENAME:$SLURM_JOB_ID:$SLURM_STEP_ID:$SLURM_NTASKS:$$"; '
    "exec 2>&1; "
    '"$@"; '
    f'echo "{EXIT_MARKER}:$?"'
)

# How the step must behave whatever the site's defaults: stdin to every task, labelled
# output, our environment, and one task ending (or being killed) leaves the others alone.
STEP_FLAGS = ("--label", "--input=all", "--export=ALL", "--kill-on-bad-exit=0", "--wait=0", "--mpi=none")


def srun_program() -> str:
    """srun's path; a clear error when this machine has no Slurm client."""
    found = shutil.which("srun")
    if found is None:
        raise FileNotFoundError("srun is not on PATH: run addprocs('slurm') on a Slurm login or compute node")
    return found


def step_argv(
    srun: str, resource_flags: Sequence[str], worker_argv: Sequence[str], params: dict[str, Any]
) -> list[str]:
    """``srun ... sh -c WRAPPER sh WORKER...``: one task per worker."""
    argv = [srun, *STEP_FLAGS]
    if params.get("dir"):
        argv.append(f"--chdir={os.fspath(params['dir'])}")
    return [*argv, *resource_flags, "sh", "-c", TASK_WRAPPER, "sh", *worker_argv]


def dry_run_argv(srun: str, resource_flags: Sequence[str]) -> list[str]:
    """``srun --test-only``: Slurm says at once whether the request can ever run."""
    return [srun, "--test-only", *resource_flags, "true"]


def force_kill_argv(srun: str, jobid: str, node: str, shell_pid: int) -> list[str]:
    """A one-task step beside the workers that kills one wrapper's children on its node."""
    return [
        srun, "--jobid", jobid, "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={node}",
        "--job-name=clustercore-kill", "pkill", "-KILL", "-P", str(shell_pid),
    ]  # fmt: skip


@functools.cache
def parent_death_prefix() -> tuple[str, ...]:
    """``setpriv --pdeathsig TERM`` where setpriv has it: srun ends (and cancels its job) if we die."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        usage = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (setpriv, "--pdeathsig", "TERM") if "--pdeathsig" in usage else ()
