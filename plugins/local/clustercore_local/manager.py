"""``LocalManager``: ``np`` worker processes on this machine."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from threading import Condition
from typing import Any

from clustercore import ClusterManager, WorkerConfig, cluster_cookie
from clustercore.default_manager import end_process
from clustercore.managers import worker_command, worker_environment


@dataclass
class LocalManager(ClusterManager):
    """Start ``np`` workers here; ``restrict=True`` binds them to 127.0.0.1 only."""

    np: int = 1
    restrict: bool = True
    exit_timeout: float = 15.0
    term_timeout: float = 15.0

    def __post_init__(self) -> None:
        if isinstance(self.np, bool) or not isinstance(self.np, int) or self.np < 1:
            raise ValueError(f"LocalManager needs a positive number of workers, not {self.np!r}")
        if not isinstance(self.restrict, bool):
            raise TypeError("restrict must be True or False")

    def start_workers(self, params: dict[str, Any], launched: list[WorkerConfig], launch_ntfy: Condition) -> None:
        bind_to = "127.0.0.1" if self.restrict else "0.0.0.0"
        argv = worker_command(params, bind_to=bind_to)
        env = {**os.environ, **worker_environment(params)}
        cookie_line = (cluster_cookie() + "\n").encode()
        for _ in range(self.np):
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=params.get("dir") or None,
                env=env,
                start_new_session=True,  # a Ctrl-C at the driver's terminal is the driver's alone
            )
            assert process.stdin is not None
            process.stdin.write(cookie_line)
            process.stdin.close()
            config = WorkerConfig(io=process.stdout, process=process, ospid=process.pid)
            config.enable_threaded_blas = bool(params.get("enable_threaded_blas"))
            with launch_ntfy:
                launched.append(config)
                launch_ntfy.notify_all()

    def end_worker(self, pid: int, config: WorkerConfig) -> None:
        from clustercore.processes import remote_exit

        remote_exit(pid)
        if config.process is not None:
            end_process(config.process, self.exit_timeout, self.term_timeout)
