"""The ``launch`` hook's work: start one srun step and hand each ready task to the core.

Outside an allocation a dry run (``srun --test-only``) first lets Slurm
reject an impossible request with its own message. Then srun starts, the
cookie goes down its stdin, and the tasks become ``WorkerConfig``s in launch
order (node by node, then ``SLURM_PROCID``) as soon as each and those before
it have printed their addresses, so the core connects while others still
start. A cancelled launch (``addprocs`` gave up: a failure elsewhere, the
caller's Ctrl-C) cancels the job at once, even while it waits in the queue.
Any task that ends before it is ready, srun exiting early, or
``launch_timeout`` running out cancels the step (the job, if srun made it)
and raises.
"""

from __future__ import annotations

import os
import socket
import time
from threading import Condition
from typing import Any

from clustercore.plugin import (
    LaunchCancelled,
    WorkerConfig,
    launch_cancelled,
    on_launch_cancelled,
    report_launched,
    worker_command,
    worker_environment,
    worker_secret,
)

from . import command, slurmctl
from .errors import SlurmError
from .manager import SlurmManager, in_allocation
from .progress import Progress
from .step import SrunStep, Task
from .steps import UnjoinedTask

STATUS_INTERVAL = 2.0  # how often squeue is asked while the job is pending


def launch_workers(
    manager: SlurmManager, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition
) -> None:
    inside = in_allocation()
    srun = command.srun_program()
    flags = manager.resource_flags()
    if not inside:
        slurmctl.dry_run(command.dry_run_argv(srun, flags))
    worker_argv = worker_command(params, bind_to="host", lifeline=True)  # the node's own address only
    step = SrunStep(
        command.step_argv(srun, flags, worker_argv, params),
        {**os.environ, **worker_environment(params)},
        worker_secret() + "\n",
        owns_allocation=not inside,
        jobid=os.environ.get("SLURM_JOB_ID") if inside else None,
    )
    manager.steps.add(step)
    step.start()
    try:
        _Launch(manager, step, params, launched, launch_ntfy).run()
    except BaseException:  # a failure, launch_timeout, or addprocs gave up (LaunchCancelled)
        step.cancel()  # the queued job, the step and its tasks: nothing stays in the queue
        raise
    finally:
        with step.changed:
            step.launching = False


class _Launch:
    def __init__(
        self,
        manager: SlurmManager,
        step: SrunStep,
        params: dict[str, Any],
        launched: list[WorkerConfig],
        launch_ntfy: Condition,
    ) -> None:
        self.manager, self.step, self.params = manager, step, params
        self.launched, self.launch_ntfy = launched, launch_ntfy
        self.expected = manager.expected_workers()
        self.progress = Progress(manager.progress)
        timeout = manager.launch_timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.handed: set[int] = set()
        self.last_state: tuple[str, str] | None = None
        self.next_status = 0.0
        self.cancelled = launch_cancelled(launch_ntfy)
        on_launch_cancelled(launch_ntfy, step.poke)  # wakes the wait below

    def run(self) -> None:
        step, seen = self.step, -1
        while True:
            with step.changed:
                step.wait_for_change(seen, self._wait_time())
                seen = step.version
                failed = [t for t in step.tasks.values() if t.ended and t.number not in self.handed]
                total = step.ntasks or self.expected
                ready = _next_in_order(step.tasks, total, self.handed)
                queued, step_wait, finished = step.queued, step.step_wait, step.finished
                started = bool(step.tasks)
            if self.cancelled.is_set():
                raise LaunchCancelled(f"slurm job {step.jobid or '?'}: addprocs gave up")
            for task in ready:
                self._hand_over(task)
            self.progress.ready(step.jobid, len(self.handed), total)
            if failed:
                raise SlurmError(self._failure("tasks ended before their workers were ready", failed))
            if total is not None and len(self.handed) >= total:
                return
            if finished:
                raise SlurmError(self._failure(f"srun exited (code {step.returncode}) before the workers started"))
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise TimeoutError(self._timeout_message(total))
            if queued:
                self._show_queue_state()
            elif step_wait:
                self.progress.job_state(step.jobid, "step PENDING", step_wait)
            elif not step.owns_allocation and not started:
                self._show_step_state()

    def _wait_time(self) -> float:
        waits = [STATUS_INTERVAL]
        if self.deadline is not None:
            waits.append(max(0.0, self.deadline - time.monotonic()))
        return min(waits)

    def _show_queue_state(self) -> None:
        now = time.monotonic()
        if now < self.next_status or not self.step.jobid:
            return
        self.next_status = now + STATUS_INTERVAL
        state = slurmctl.job_state(self.step.jobid)
        if state is not None and state[0] in ("PENDING", "CONFIGURING", "SUSPENDED", "REQUEUED"):
            self.last_state = state
            self.progress.job_state(self.step.jobid, *state)

    def _show_step_state(self) -> None:
        """In an allocation: a step that cannot start yet (its resources are busy with other steps)."""
        now = time.monotonic()
        if now < self.next_status or not self.step.jobid:
            return
        first = self.next_status == 0.0
        self.next_status = now + STATUS_INTERVAL
        if not first and slurmctl.has_pending_step(self.step.jobid):
            self.last_state = ("step PENDING", "the allocation's resources are busy")
            self.progress.job_state(self.step.jobid, *self.last_state)

    def _hand_over(self, task: Task) -> None:
        assert task.hello is not None and task.address is not None
        hello, (reported_host, port) = task.hello, task.address
        config = WorkerConfig(
            host=_reachable_host(hello.node, reported_host),
            port=port,
            userdata={"procid": hello.procid, "node": hello.node, "jobid": hello.jobid, "stepid": hello.stepid},
            enable_threaded_blas=bool(self.params.get("enable_threaded_blas")),
        )
        config.process = UnjoinedTask(self.manager.steps, config, self.step, task)
        self.manager.steps.bind(config, self.step, task)
        self.handed.add(task.number)
        report_launched(self.launched, self.launch_ntfy, config)

    def _failure(self, what: str, tasks: list[Task] | None = None) -> str:
        step = self.step
        with step.changed:
            tasks = tasks if tasks is not None else [t for t in step.tasks.values() if t.number not in self.handed]
            parts = [f"slurm job {step.jobid or '?'}: {what}"]
            parts += [t.describe() for t in sorted(tasks, key=lambda t: t.number)]
            if step.messages:
                parts.append("srun said:\n    " + "\n    ".join(step.messages))
        return "\n".join(parts)

    def _timeout_message(self, total: int | None) -> str:
        step = self.step
        timeout = self.manager.launch_timeout
        state = f"; it was {self.last_state[0]} ({self.last_state[1]})" if self.last_state else ""
        what = "the job was cancelled" if step.owns_allocation else "the step was cancelled"
        return (
            f"slurm job {step.jobid or '?'}: {len(self.handed)} of {total if total is not None else '?'} workers "
            f"ready after launch_timeout={timeout:g} s{state}; {what}"
        )


def _next_in_order(tasks: dict[int, Task], total: int | None, handed: set[int]) -> list[Task]:
    """The ready tasks that come next in launch order: by node (in the order of each node's
    first task) and then by ``SLURM_PROCID``, as Julia users expect ``pids[0]`` on the first
    host. That order is known once every task has said hello; until then nothing is handed
    over (hellos come first, as each task starts; addresses follow once Python runs)."""
    if total is None or len(tasks) < total or any(t.hello is None for t in tasks.values()):
        return []
    first_on: dict[str, int] = {}
    for task in sorted(tasks.values(), key=lambda t: t.number):
        assert task.hello is not None
        first_on.setdefault(task.hello.node, task.number)
    order = sorted(tasks.values(), key=lambda t: (first_on[t.hello.node], t.number))  # type: ignore[union-attr]
    ready = []
    for task in order:
        if task.number in handed:
            continue
        if not task.ready:
            break  # the next one in order is not ready: the rest waits for it
        ready.append(task)
    return ready


def _reachable_host(node: str, reported: str) -> str:
    """Slurm's address for the node; the worker's own report if that does not resolve here."""
    address = slurmctl.node_address(node)
    try:
        socket.getaddrinfo(address, None)
        return address
    except OSError:
        return reported
