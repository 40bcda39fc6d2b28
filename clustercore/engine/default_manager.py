"""Built-in hook implementations: the defaults every manager gets.

Registered like an external plugin, marked ``trylast`` so a plugin's own
implementation wins. They do what Julia's defaults do: ``connect`` reads the
worker's address line (or takes ``host``/``port``) and opens TCP; ``kill``
asks the worker to exit, then ends ``config.process`` if there is one.
"""

from __future__ import annotations

import subprocess
from typing import Any

from .hooks import hookimpl
from .managers import ClusterManager, WorkerConfig, default_connect, end_process


@hookimpl(trylast=True)
def connect(manager: ClusterManager, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
    return default_connect(pid, config)


@hookimpl(trylast=True)
def kill(manager: ClusterManager, pid: int, config: WorkerConfig) -> bool:
    from .requests import remote_exit

    remote_exit(pid)
    process = config.process
    if isinstance(process, subprocess.Popen):
        end_process(process)
    return True


@hookimpl(trylast=True)
def manage(manager: ClusterManager, id: int, config: WorkerConfig, op: str) -> bool:
    return True
