"""``SlurmManager``: workers as the tasks of one ``srun`` step.

Its fields are the ``addprocs("slurm", ...)`` keywords; they are checked in
``__post_init__`` so bad input fails before Slurm is asked anything. The
runtime side (the steps it started, which task is which worker) lives in
``self.steps``, which is not a field.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from clustercore.plugin import ClusterManager

from . import options
from .steps import Steps

DEFAULT_LAUNCH_TIMEOUT = 3600.0


@dataclass(eq=False)
class SlurmManager(ClusterManager):
    """Start workers as the tasks of one ``srun`` step.

    Inside an allocation (``SLURM_JOB_ID`` set) the step runs in it, with
    ``ntasks`` defaulting to ``SLURM_NTASKS``; outside one, srun asks for its
    own allocation with these options. ``srun_flags`` passes other srun
    options through. ``launch_timeout`` (seconds, ``None``: no limit) bounds
    the wait for all workers, queue time included; when it runs out the job
    is cancelled. ``progress`` shows the job's state while it waits and
    ``"k of N workers ready"`` (``None``: only when the start is slow).
    """

    ntasks: int | None = None
    partition: str | None = None
    time: str | int | timedelta | None = None
    nodes: int | str | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_per_cpu: str | int | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    job_name: str | None = "clustercore"
    constraint: str | None = None
    overcommit: bool = False
    srun_flags: Sequence[str] = ()
    launch_timeout: float | None = DEFAULT_LAUNCH_TIMEOUT
    progress: bool | None = None

    def __post_init__(self) -> None:
        self.ntasks = options.positive_int("ntasks", self.ntasks)
        self.partition = options.names("partition", self.partition)
        self.time = options.slurm_time(self.time)
        self.nodes = options.node_count(self.nodes)
        self.ntasks_per_node = options.positive_int("ntasks_per_node", self.ntasks_per_node)
        self.cpus_per_task = options.positive_int("cpus_per_task", self.cpus_per_task)
        self.mem_per_cpu = options.memory(self.mem_per_cpu)
        self.gres = options.gres(self.gres)
        self.account = options.names("account", self.account)
        self.qos = options.names("qos", self.qos)
        self.job_name = options.text("job_name", self.job_name)
        self.constraint = options.text("constraint", self.constraint)
        self.overcommit = options.flag("overcommit", self.overcommit)
        self.srun_flags = options.srun_flags(self.srun_flags)
        self.launch_timeout = options.seconds("launch_timeout", self.launch_timeout)
        self.progress = options.optional_flag("progress", self.progress)
        self.steps = Steps()  # runtime state, not an option

    def resource_flags(self, environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
        """The srun options for the resources asked for (allocation and step alike)."""
        environ = os.environ if environ is None else environ
        ntasks = self.ntasks
        if ntasks is None and in_allocation(environ) and self.nodes is None and self.ntasks_per_node is None:
            ntasks = options.positive_int("SLURM_NTASKS", _int_or_none(environ.get("SLURM_NTASKS")))
        values: list[tuple[str, object]] = [
            ("--ntasks", ntasks),
            ("--nodes", self.nodes),
            ("--ntasks-per-node", self.ntasks_per_node),
            ("--cpus-per-task", self.cpus_per_task),
            ("--mem-per-cpu", self.mem_per_cpu),
            ("--gres", self.gres),
            ("--partition", self.partition),
            ("--time", self.time),
            ("--account", self.account),
            ("--qos", self.qos),
            ("--job-name", self.job_name),
            ("--constraint", self.constraint),
        ]
        flags = [f"{name}={value}" for name, value in values if value is not None]
        if self.overcommit:
            flags.append("--overcommit")
        return [*flags, *self.srun_flags]

    def expected_workers(self, environ: dict[str, str] | os._Environ[str] | None = None) -> int | None:
        """How many tasks the step will have, when that is known before it starts."""
        environ = os.environ if environ is None else environ
        if self.ntasks is not None:
            return self.ntasks
        if self.nodes is not None and str(self.nodes).isdigit() and self.ntasks_per_node is not None:
            return int(self.nodes) * self.ntasks_per_node
        if in_allocation(environ) and self.nodes is None and self.ntasks_per_node is None:
            return _int_or_none(environ.get("SLURM_NTASKS"))
        return None


def in_allocation(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """True in an sbatch script, an salloc shell or an srun task."""
    return bool((os.environ if environ is None else environ).get("SLURM_JOB_ID"))


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None
