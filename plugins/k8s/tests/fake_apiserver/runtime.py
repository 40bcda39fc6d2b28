"""The container runtime: one container = one local process group, started, signalled,
measured and reaped by pid only (never by name), with image and container ids for status."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .meta import now
from .quantity import parse_quantity

Obj = dict[str, Any]


def normalize_image(image: str) -> str:
    """``python:3.11`` -> ``docker.io/library/python:3.11``, as containerd reports it."""
    first = image.split("/")[0]
    if "/" not in image:
        image = "docker.io/library/" + image
    elif "." not in first and ":" not in first and first != "localhost":
        image = "docker.io/" + image
    last = image.rsplit("/", 1)[-1]
    return image if "@" in last or ":" in last else image + ":latest"


def image_id(image: str) -> str:
    """A stable ``repo@sha256:...`` digest for an image reference."""
    full = normalize_image(image)
    head, _, last = full.rpartition("/")
    name = last.split("@")[0].split(":")[0]
    return f"{head}/{name}@sha256:{hashlib.sha256(full.encode()).hexdigest()}"


class IpPool:
    """Pod IPs from a loopback CIDR; every address in 127.0.0.0/8 is bindable on Linux without setup."""

    def __init__(self, cidr: str, reserved: set[str]) -> None:
        net = ipaddress.ip_network(cidr)
        if not net.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
            raise ValueError(f"pod CIDR {cidr} is not loopback")
        self._free = [str(h) for h in net.hosts() if str(h) not in reserved]
        self._used: set[str] = set()
        self._next = 0

    def acquire(self) -> str:
        """The next free address (round robin, so addresses are not reused at once)."""
        for _ in range(len(self._free)):
            ip = self._free[self._next % len(self._free)]
            self._next += 1
            if ip not in self._used:
                self._used.add(ip)
                return ip
        raise RuntimeError("fake-apiserver: pod CIDR exhausted")

    def release(self, ip: str) -> None:
        """Return an address to the pool."""
        self._used.discard(ip)


@dataclass
class Container:
    """Runtime state of one container of one pod."""

    spec: Obj
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    reaped: bool = True
    container_id: str = ""
    image_id: str = ""
    log: Path | None = None
    prev_log: Path | None = None
    kill_reason: str = ""
    waiter: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    @property
    def alive(self) -> bool:
        """Started and not yet reaped."""
        return self.proc is not None and not self.reaped

    @property
    def memory_limit(self) -> int | None:
        """``resources.limits.memory`` in bytes."""
        limit = ((self.spec.get("resources") or {}).get("limits") or {}).get("memory")
        return int(parse_quantity(limit)) if limit is not None else None

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        """Spawn the process in its own session (so its group can be signalled as a whole)."""
        self.container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
        self.prev_log, self.log = self.log, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.reaped, self.kill_reason = False, ""

    def signal(self, sig: int, group: bool) -> None:
        """Signal the main process (or its whole group); a no-op once reaped. Call under the kubelet lock."""
        if not self.alive:
            return
        assert self.proc is not None
        try:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def pids(self) -> list[int]:
        """The main process and its descendants."""
        if not self.alive:
            return []
        assert self.proc is not None
        try:
            main = psutil.Process(self.proc.pid)
            return [main.pid, *(p.pid for p in main.children(recursive=True))]
        except psutil.Error:
            return []

    def rss(self) -> int:
        """Resident memory of the container's processes (what a cgroup limit would count, roughly)."""
        total = 0
        for pid in self.pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return total


def _group_members(pgid: int) -> list[psutil.Process]:
    """Other processes in process group ``pgid`` (the container's processes that outlive its main one)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != pgid and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (OSError, psutil.Error):
            pass
    return members


def wait_and_reap(container: Container, lock: threading.RLock, on_exit: Callable[[int], None]) -> None:
    """Block until the main process exits, kill the rest of its group and wait for it, reap, report.

    ``waitid(WNOWAIT)`` leaves the main process a zombie until the very end, which pins its
    process-group id: the group signalled is always the container's, never a reused one.
    """
    proc = container.proc
    assert proc is not None
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    members = _group_members(proc.pid)
    with lock:
        container.signal(signal.SIGKILL, group=True)
    psutil.wait_procs(members, timeout=5)
    with lock:
        code = proc.wait()
        container.reaped = True
        exit_code = code if code >= 0 else 128 - code
        on_exit(exit_code)


def terminated(container: Container, exit_code: int, reason: str = "", message: str = "") -> Obj:
    """A ``state.terminated`` block for the container's current run."""
    block: Obj = {
        "exitCode": exit_code,
        "reason": reason or container.kill_reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": container.state.get("running", {}).get("startedAt", now()),
        "finishedAt": now(),
        "containerID": container.container_id,
    }
    if message:
        block["message"] = message
    return block
