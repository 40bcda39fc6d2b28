"""Short questions to Slurm's controller (squeue, sinfo, scancel, srun --test-only), each bounded in time."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Sequence

from .errors import SlurmError

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 30.0

_addresses: dict[str, str] = {}
_addresses_lock = threading.Lock()


def run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command; its output, or ``SlurmError`` if it hangs or is missing."""
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{argv[0]} did not answer within {timeout:g} s: is slurmctld up?") from exc
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} is not installed here") from exc


def dry_run(argv: Sequence[str]) -> None:
    """Raise ``SlurmError`` with Slurm's own words when a request could never run."""
    result = run(argv)
    if result.returncode != 0:
        message = "\n".join(line for line in result.stderr.splitlines() if line.strip()) or "(no message)"
        raise SlurmError(f"Slurm rejected the request: {message}")


def job_state(jobid: str) -> tuple[str, str] | None:
    """``(state, reason)`` of a job from squeue, e.g. ``("PENDING", "Resources")``; None once it is gone."""
    try:
        result = run(["squeue", "--noheader", "--jobs", jobid, "--format=%T|%r"])
    except SlurmError as exc:
        log.debug("squeue failed: %s", exc)
        return None
    for line in result.stdout.splitlines():
        state, _, reason = line.strip().partition("|")
        if state:
            return state, reason
    return None


def has_pending_step(jobid: str) -> bool:
    """Whether a step of this job waits for resources (srun itself says so only once it starts)."""
    try:
        result = run(["scontrol", "show", "step", jobid])
    except SlurmError as exc:
        log.debug("scontrol failed: %s", exc)
        return False
    return "State=PENDING" in result.stdout


def wait_job_gone(jobid: str, timeout: float, interval: float = 0.1) -> bool:
    """Poll squeue until the job is no longer listed (Slurm offers no event for that); False on timeout."""
    deadline = time.monotonic() + timeout
    while job_state(jobid) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def cancel(jobid: str) -> None:
    """``scancel JOBID`` (also ``JOBID.STEP``); errors are logged, not raised."""
    try:
        result = run(["scancel", jobid])
    except SlurmError as exc:
        log.warning("could not cancel slurm job %s: %s", jobid, exc)
        return
    if result.returncode != 0:
        log.warning("scancel %s: %s", jobid, result.stderr.strip())


def node_address(node: str) -> str:
    """The address Slurm reaches ``node`` at (its ``NodeAddr``); the name itself if unknown."""
    with _addresses_lock:
        if node in _addresses:
            return _addresses[node]
    address = node
    try:
        result = run(["sinfo", "--noheader", "--Node", "--nodes", node, "--format=%N %o"])
        for line in result.stdout.splitlines():
            name, _, addr = line.strip().partition(" ")
            if name == node and addr:
                address = addr
                break
    except SlurmError as exc:
        log.debug("sinfo failed, using node name %s as its address: %s", node, exc)
    with _addresses_lock:
        _addresses[node] = address
    return address
