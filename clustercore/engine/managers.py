"""The cluster-manager interface: ``ClusterManager`` (Julia's ``launch``, ``manage``,
``kill``, ``connect``), dispatched to the plugin hooks, with Julia's defaults.

A manager is a class from a pip-installed plugin (its hooks recognise it) or a
subclass in user code that overrides the methods. A method no plugin answers for
does what Julia's default does: ``connect`` reads the worker's address line (or
takes ``host``/``port``) and opens TCP; ``kill`` asks the worker to exit, then ends
``config.process`` if there is one; ``manage`` does nothing.
"""

from __future__ import annotations

import subprocess
from threading import Condition
from typing import Any

from . import hooks
from .launching import WorkerConfig, default_connect, end_process
from .requests import remote_exit


class ClusterManager:
    """Base class of cluster managers; methods dispatch to the plugin hooks.

    Override ``launch`` and ``manage`` (and, for a custom transport,
    ``connect``; for a custom way to end processes, ``kill``) in a subclass,
    or leave them to the plugin whose hooks recognise this class.
    """

    def launch(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
        if hooks.answer("launch", self, params=params, launched=launched, launch_ntfy=launch_ntfy) is None:
            raise NotImplementedError(
                f"{type(self).__name__} does not implement 'launch': define a launch method "
                "on it, or install the plugin that provides it"
            )

    def manage(self, id: int, config: WorkerConfig, op: str) -> None:
        hooks.answer("manage", self, id=id, config=config, op=op)

    def kill(self, pid: int, config: WorkerConfig) -> None:
        if hooks.answer("kill", self, pid=pid, config=config) is None:
            remote_exit(pid)
            if isinstance(config.process, subprocess.Popen):
                end_process(config.process)

    def connect(self, pid: int, config: WorkerConfig) -> tuple[Any, Any]:
        found = hooks.answer("connect", self, pid=pid, config=config)
        return default_connect(pid, config) if found is None else found  # type: ignore[no-any-return]
