"""A cluster manager with its own transport: Unix domain sockets instead of TCP.

Imported by the driver (tests) and by the workers it starts, which use it to
reach each other (``init_worker(cookie, manager)``), as in Julia's
UnixDomainCM example.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from threading import Condition
from typing import Any

import clustercore as cc

WORKER_SCRIPT = """
import socket, sys, threading
sys.path.insert(0, {tests_dir!r})
import clustercore as cc
from uds_manager import UDSManager
cookie = sys.stdin.readline().strip()
cc.init_worker(cookie, UDSManager())
listener = socket.socket(socket.AF_UNIX)
listener.bind({path!r})
listener.listen(16)
print("listening", flush=True)
while True:
    sock, _ = listener.accept()
    threading.Thread(target=cc.process_messages, args=(sock, sock), daemon=True).start()
"""


class UDSManager(cc.ClusterManager):
    """Each worker listens on its own Unix socket; every link is made by ``connect``."""

    def __init__(self, np: int = 2) -> None:
        self.np = np
        self.dir = ""  # made by launch: a worker makes this manager too, and launches nothing
        self.connects = 0

    def launch(self, params: dict[str, Any], launched: list[cc.WorkerConfig], launch_ntfy: Condition) -> None:
        tests_dir = os.path.dirname(os.path.abspath(__file__))
        self.dir = self.dir or tempfile.mkdtemp(prefix="cc-uds-")
        for i in range(self.np):
            path = os.path.join(self.dir, f"worker{i}.sock")
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER_SCRIPT.format(tests_dir=tests_dir, path=path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((cc.cluster_cookie() + "\n").encode())
            proc.stdin.close()
            ready = proc.stdout.readline()
            assert ready == b"listening\n", ready
            with launch_ntfy:
                launched.append(cc.WorkerConfig(io=proc.stdout, process=proc, ospid=proc.pid, userdata={"path": path}))
                launch_ntfy.notify_all()

    def manage(self, id: int, config: cc.WorkerConfig, op: str) -> None:
        if op == "deregister":  # the worker's socket goes with it, and the folder with the last
            with contextlib.suppress(OSError):
                os.unlink(config.userdata["path"])
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)

    def connect(self, pid: int, config: cc.WorkerConfig) -> tuple[Any, Any]:
        path = config.connect_at if config.connect_at is not None else config.userdata["path"]
        config.connect_at = path  # what other workers use to reach this one
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        self.connects += 1
        return sock, sock
