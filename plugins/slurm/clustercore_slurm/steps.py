"""``Steps``: a manager's srun steps and which task each ``WorkerConfig`` is.

It ends a step once none of its tasks is wanted any more (all removed or
gone), and, at interpreter exit, every step still running, so no job is
left in the queue after the driver is done.
"""

from __future__ import annotations

import atexit
import logging
import threading

from clustercore.plugin import WorkerConfig

from .step import SrunStep, Task

log = logging.getLogger(__name__)

_running: set[SrunStep] = set()
_running_lock = threading.Lock()
_atexit_registered = False


class Steps:
    """The steps one ``SlurmManager`` started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[WorkerConfig, tuple[SrunStep, Task]] = {}

    def add(self, step: SrunStep) -> None:
        _track(step)

    def bind(self, config: WorkerConfig, step: SrunStep, task: Task) -> None:
        with self._lock:
            self._tasks[config] = (step, task)

    def lookup(self, config: WorkerConfig) -> tuple[SrunStep, Task] | None:
        with self._lock:
            return self._tasks.get(config)

    def forget(self, config: WorkerConfig) -> None:
        with self._lock:
            self._tasks.pop(config, None)

    def release(self, step: SrunStep, task: Task, *, wait: bool) -> None:
        """``task`` is no longer wanted; end its step if it was the last one."""
        with step.changed:
            task.removed = True
        if step.live_tasks():
            return
        if wait:
            end_step(step)
        else:
            threading.Thread(target=end_step, args=(step,), name="clustercore-srun-end", daemon=True).start()


class UnjoinedTask:
    """``WorkerConfig.process`` of a task: what the core calls ``kill()`` on when its worker
    never joined (its join failed, or ``addprocs`` gave up). The task is killed on its node
    unless the step ends anyway (it was the step's last wanted task: then the step ends, and
    the job srun made leaves the queue, before this returns)."""

    def __init__(self, steps: Steps, config: WorkerConfig, step: SrunStep, task: Task) -> None:
        self.steps, self.config, self.step, self.task = steps, config, step, task

    def kill(self) -> None:
        with self.step.changed:
            self.task.removed = True
        if self.step.live_tasks():
            self.step.kill_task(self.task, 0.0)
        self.steps.release(self.step, self.task, wait=True)
        self.steps.forget(self.config)


def end_step(step: SrunStep) -> None:
    step.end()
    with _running_lock:
        _running.discard(step)


def _track(step: SrunStep) -> None:
    global _atexit_registered
    with _running_lock:
        _running.add(step)
        if not _atexit_registered:
            atexit.register(end_all)
            _atexit_registered = True


def end_all() -> None:
    """End every step still running (their workers exit, their jobs leave the queue)."""
    with _running_lock:
        steps = list(_running)
    enders = [threading.Thread(target=end_step, args=(step,), daemon=True) for step in steps]
    for ender in enders:
        ender.start()
    for ender in enders:
        ender.join()
