"""What srun prints, parsed: labelled task lines, the wrapper's markers, srun's own messages.

With ``--label`` srun prefixes every task line with its task number
(``" 3: text"``, padded to the widest number). The task wrapper
(:mod:`clustercore_slurm.command`) adds two markers around the worker::

    clustercore_slurm_task:PROCID:NODE:JOBID:STEPID:NTASKS:SHELLPID   (first line)
    clustercore_slurm_exit:CODE                                        (after the worker ended)

and the worker itself prints ``clustercore_worker:PORT#HOST``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clustercore.plugin import parse_address_line

TASK_MARKER = "clustercore_slurm_task"
EXIT_MARKER = "clustercore_slurm_exit"

_LABEL = re.compile(r"\s*(\d+): ?(.*)", re.DOTALL)
_HELLO = re.compile(rf"{TASK_MARKER}:(\d+):([^:\s]+):(\d+):(\d*):(\d+):(\d+)")
_EXIT = re.compile(rf"{EXIT_MARKER}:(\d+)")
_QUEUED = re.compile(r"srun: job (\d+) queued and waiting for resources", re.IGNORECASE)
_ALLOCATED = re.compile(r"srun: job (\d+) has been allocated resources", re.IGNORECASE)
_STEP_WAIT = re.compile(r"srun: Job (\d+) step creation temporarily disabled, retrying \((.*)\)")
_STEP_CREATED = re.compile(r"srun: Step created for (?:job|StepId=)(\d+)")
_TASKS_ENDED = re.compile(r"srun: error: (\S+): tasks? ([\d,\-]+): (.*)")


@dataclass(frozen=True)
class Hello:
    """The wrapper's first line: who and where this task is."""

    procid: int
    node: str
    jobid: str
    stepid: str
    ntasks: int
    shell_pid: int


@dataclass(frozen=True)
class SrunNotice:
    """One of srun's own stderr lines, classified."""

    kind: str  # queued | allocated | step_wait | step_created | tasks_ended | error | info
    text: str
    jobid: str | None = None
    reason: str | None = None
    node: str | None = None
    tasks: tuple[int, ...] = ()


def split_label(line: str) -> tuple[int | None, str]:
    """``" 3: text"`` -> ``(3, "text")``; an unlabelled line -> ``(None, line)``."""
    match = _LABEL.fullmatch(line)
    if match is None:
        return None, line
    return int(match[1]), match[2]


def parse_hello(text: str) -> Hello | None:
    match = _HELLO.fullmatch(text.strip())
    if match is None:
        return None
    procid, node, jobid, stepid, ntasks, shell_pid = match.groups()
    return Hello(int(procid), node, jobid, stepid, int(ntasks), int(shell_pid))


def parse_exit(text: str) -> int | None:
    match = _EXIT.fullmatch(text.strip())
    return int(match[1]) if match else None


def parse_address(text: str) -> tuple[str, int] | None:
    """The worker's ``clustercore_worker:PORT#HOST`` -> ``(host, port)``."""
    return parse_address_line(text)


def task_range(spec: str) -> tuple[int, ...]:
    """``"0-2,5"`` -> ``(0, 1, 2, 5)``."""
    found: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            found.extend(range(int(first), int(last or first) + 1))
    return tuple(found)


def classify_srun_line(line: str) -> SrunNotice:
    """Sort an unlabelled srun stderr line into what the launcher reacts to."""
    text = line.strip()
    if match := _QUEUED.search(text):
        return SrunNotice("queued", text, jobid=match[1])
    if match := _ALLOCATED.search(text):
        return SrunNotice("allocated", text, jobid=match[1])
    if match := _STEP_WAIT.search(text):
        return SrunNotice("step_wait", text, jobid=match[1], reason=match[2])
    if match := _STEP_CREATED.search(text):
        return SrunNotice("step_created", text, jobid=match[1])
    if match := _TASKS_ENDED.search(text):
        return SrunNotice("tasks_ended", text, node=match[1], tasks=task_range(match[2]), reason=match[3])
    if text.startswith("srun: error:") or text.startswith("srun: fatal:") or text.startswith("allocation failure"):
        return SrunNotice("error", text)
    return SrunNotice("info", text)
