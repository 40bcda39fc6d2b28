"""What is known of one worker: where it runs and what its manager recorded.

The one place that answers it, for the user API (``worker_info``) and for the
views (``status()``, ``calls_in_flight()``, the metrics).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .cluster import PGRP, check_pid, worker_from_id
from .hooks import manager_name


@dataclasses.dataclass(frozen=True)
class WorkerDetails:
    """What :func:`worker_info` tells of one worker."""

    pid: int
    host: str  #: the host it runs on, as ``socket.gethostname()`` says there
    ospid: int  #: its process id on that host (0 if not known)
    manager: str  #: the name of the manager that started it (``"local"``, ``"ssh"``, ``"slurm"``, ``"k8s"``, ...)
    userdata: Any  #: ``WorkerConfig.userdata`` its manager recorded (each plugin's README says what it holds)


def worker_info(pid: int) -> WorkerDetails:
    """Where worker ``pid`` runs and what its manager recorded about it: ``host``, ``ospid``,
    ``manager`` (its registered name, else its class name) and ``userdata`` (e.g. Slurm's
    ``{"procid", "node", "jobid", "stepid"}``). The manager and userdata are known on pid 1
    (elsewhere ``""`` and ``None``). ``ValueError`` for an unknown pid,
    ``ProcessExitedException`` for one that is gone."""
    if pid == PGRP.myid:
        return WorkerDetails(pid, PGRP.hostname, os.getpid(), "", None)
    w = worker_from_id(check_pid(pid))
    userdata = w.config.userdata if w.config is not None else None
    return WorkerDetails(w.id, w.hostname, w.ospid, manager_name(w.manager), userdata)
