"""The kubelet of the one fake node: runs bound pods' containers as local processes, reports
their status (phases, container states, conditions), restarts per restartPolicy, kills on
memory limits (OOMKilled), on eviction and on deletion (SIGTERM, grace, SIGKILL)."""

from __future__ import annotations

import copy
import logging
import os
import random
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import environment
from .api import TERMINAL, Api
from .errors import bad_request, not_found
from .events import Recorder
from .meta import now
from .runtime import Container, IpPool, image_id, normalize_image, terminated, wait_and_reap
from .scheduler import Node, set_condition
from .store import Change, Store

log = logging.getLogger(__name__)
Obj = dict[str, Any]
NO_ENTRYPOINT = "fake-apiserver runs `command` + `args` only: there is no image entrypoint to fall back on"
_CONDITION_ORDER = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
    "DisruptionTarget",
]


@dataclass
class PodRuntime:
    """What the kubelet keeps about one admitted pod."""

    uid: str
    namespace: str
    name: str
    ip: str
    dir: Path
    restart_policy: str
    containers: list[Container]
    started_at: str = field(default_factory=now)
    terminating: bool = False
    deleted: bool = False
    evicted: str = ""
    timers: list[threading.Timer] = field(default_factory=list)


@dataclass
class KubeletSettings:
    """Knobs: where pods live, their base environment, and failure switches for tests."""

    root: Path
    pod_cidr: str = ""
    service_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    inject_pod_ip: bool = True
    unpullable_images: set[str] = field(default_factory=set)
    restart_backoff: float = 0.2
    memory_poll: float = 0.02

    def __post_init__(self) -> None:
        if not self.pod_cidr:
            self.pod_cidr = f"127.{random.randint(100, 199)}.{random.randint(0, 255)}.0/24"


class Kubelet:
    """Reacts to pod and secret changes; owns every process it starts."""

    def __init__(self, store: Store, api: Api, recorder: Recorder, node: Node, settings: KubeletSettings) -> None:
        self.store, self.api, self.recorder, self.node, self.settings = store, api, recorder, node, settings
        self.pods: dict[str, PodRuntime] = {}
        self.started: list[tuple[int, float]] = []  # (pid, create_time) of every process started
        self._lock = threading.RLock()
        self._ips = IpPool(settings.pod_cidr, reserved={node.ip})
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch_memory, name="fake-kubelet-memory", daemon=True)
        settings.root.mkdir(parents=True, exist_ok=True)
        self._monitor.start()

    # -- reacting to the API -----------------------------------------------------------------------
    def on_change(self, ch: Change) -> None:
        """Admit, start, retry, terminate or forget pods as the store changes."""
        with self._lock:
            if self._stop.is_set():
                return
            if ch.resource == "secrets" and ch.type != "DELETED":
                for waiting in list(self.pods.values()):
                    if waiting.namespace == ch.namespace and not waiting.terminating:
                        self._start_pending(waiting)
            if ch.resource != "pods":
                return
            pod, rt = ch.obj, self.pods.get(ch.obj["metadata"]["uid"])
            if ch.type == "DELETED":
                if rt is not None:
                    rt.deleted = True
                    self._terminate(rt, 0)
                return
            if pod["spec"].get("nodeName") != self.node.name:
                return
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            if rt is None and pod["status"].get("phase") not in TERMINAL:
                if deleting:  # bound but never started: nothing to stop
                    self.store.update(
                        "pods", ch.namespace, pod["metadata"]["name"], _fail_unstarted(pod["metadata"]["uid"])
                    )
                    self.api.maybe_remove("pods", ch.namespace, pod["metadata"]["name"], uid=pod["metadata"]["uid"])
                else:
                    self._admit(pod)
            elif rt is not None and deleting and not rt.terminating:
                self._terminate(rt, int(pod["metadata"].get("deletionGracePeriodSeconds") or 0))

    def _admit(self, pod: Obj) -> None:
        meta = pod["metadata"]
        rt = PodRuntime(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            ip=self._ips.acquire(),
            dir=self.settings.root / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}",
            restart_policy=pod["spec"]["restartPolicy"],
            containers=[Container(spec=copy.deepcopy(c)) for c in pod["spec"]["containers"]],
        )
        rt.dir.mkdir(parents=True, exist_ok=True)
        self.pods[rt.uid] = rt
        self._start_pending(rt)

    def _start_pending(self, rt: PodRuntime) -> None:
        """Start every container that never ran (first start, or a retry after a config error)."""
        for c in rt.containers:
            if not c.container_id and not c.alive:
                self._start(rt, c)
        self._publish(rt)

    # -- starting ------------------------------------------------------------------------------------
    def _pod_view(self, rt: PodRuntime) -> Obj | None:
        pod = self.store.get("pods", rt.namespace, rt.name)
        if pod is None or pod["metadata"]["uid"] != rt.uid:
            return None
        ips = [{"ip": rt.ip}]
        pod["status"].update(podIP=rt.ip, podIPs=ips, hostIP=self.node.ip, hostIPs=[{"ip": self.node.ip}])
        return pod

    def _base_env(self, rt: PodRuntime) -> dict[str, str]:
        env = {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(rt.dir),
            "HOSTNAME": rt.name[:63],
            **{k: os.environ[k] for k in ("PYTHONPATH", "LANG", "LC_ALL", "TZ") if k in os.environ},
            **self.settings.service_env,
            **self.settings.extra_env,
        }
        if self.settings.inject_pod_ip:
            env["POD_IP"] = rt.ip
        return env

    def _event(self, rt: PodRuntime, c: Container, type_: str, reason: str, message: str) -> None:
        pod = self.store.get("pods", rt.namespace, rt.name)
        if pod is not None and pod["metadata"]["uid"] == rt.uid:
            self.recorder.record(pod, type_, reason, message, field_path=f"spec.containers{{{c.name}}}")

    def _start(self, rt: PodRuntime, c: Container) -> None:
        pod = self._pod_view(rt)
        if pod is None or rt.terminating or rt.evicted or self._stop.is_set():
            return
        image = c.spec["image"]
        if image in self.settings.unpullable_images or image.split("/")[0].split(":")[0].endswith(".invalid"):
            if c.state.get("waiting", {}).get("reason") != "ImagePullBackOff":
                why = f'failed to pull and unpack image "{normalize_image(image)}": not found'
                self._event(rt, c, "Normal", "Pulling", f'Pulling image "{image}"')
                self._event(rt, c, "Warning", "Failed", f'Failed to pull image "{image}": {why}')
                self._event(rt, c, "Warning", "Failed", "Error: ErrImagePull")
                self._event(rt, c, "Normal", "BackOff", f'Back-off pulling image "{image}"')
                c.state = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}": ErrImagePull: {why}',
                    }
                }
            return
        if not c.spec.get("command"):
            return self._cannot_start(rt, c, "CreateContainerError", NO_ENTRYPOINT)
        try:
            env, argv = environment.resolve(
                pod, c.spec, lambda n: self.store.get("secrets", rt.namespace, n), self.node.allocatable
            )
        except environment.ConfigError as exc:
            return self._cannot_start(rt, c, "CreateContainerConfigError", str(exc))
        if c.restarts == 0:
            if c.spec.get("imagePullPolicy") == "Always":
                self._event(rt, c, "Normal", "Pulling", f'Pulling image "{image}"')
                self._event(
                    rt,
                    c,
                    "Normal",
                    "Pulled",
                    f'Successfully pulled image "{image}" in 0s (0s including waiting). Image size: 0 bytes.',
                )
            else:
                self._event(rt, c, "Normal", "Pulled", f'Container image "{image}" already present on machine')
        c.image_id = image_id(image)
        try:
            c.start(argv, {**self._base_env(rt), **env}, rt.dir, rt.dir / f"{c.name}-{c.restarts}.log")
        except OSError as exc:
            why = (
                "executable file not found in $PATH"
                if isinstance(exc, FileNotFoundError)
                else (exc.strerror or str(exc))
            )
            msg = (
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create"
                f' failed: unable to start container process: exec: "{argv[0] if argv else ""}": {why}: unknown'
            )
            self._event(rt, c, "Warning", "Failed", f"Error: {msg}")
            self._after_exit(rt, c, terminated(c, 128, "StartError", msg))
            return
        assert c.proc is not None
        try:
            self.started.append((c.proc.pid, psutil.Process(c.proc.pid).create_time()))
        except psutil.Error:
            self.started.append((c.proc.pid, 0.0))
        c.state = {"running": {"startedAt": now()}}
        self._event(rt, c, "Normal", "Created", f"Created container: {c.name}")
        self._event(rt, c, "Normal", "Started", f"Started container {c.name}")
        c.waiter = threading.Thread(
            target=wait_and_reap,
            args=(c, self._lock, lambda code: self._exited(rt, c, code)),
            name=f"fake-kubelet-wait-{rt.name}-{c.name}",
            daemon=True,
        )
        c.waiter.start()

    def _cannot_start(self, rt: PodRuntime, c: Container, reason: str, message: str) -> None:
        """Leave the container waiting (kubelet retries it; here: when a Secret changes)."""
        if c.state.get("waiting") != {"reason": reason, "message": message}:
            c.state = {"waiting": {"reason": reason, "message": message}}
            self._event(rt, c, "Warning", "Failed", f"Error: {message}")

    # -- exits and restarts --------------------------------------------------------------------------
    def _exited(self, rt: PodRuntime, c: Container, exit_code: int) -> None:
        self._after_exit(rt, c, terminated(c, exit_code))

    def _after_exit(self, rt: PodRuntime, c: Container, block: Obj) -> None:
        policy = rt.restart_policy
        restart = not (rt.terminating or rt.evicted or self._stop.is_set()) and (
            policy == "Always" or (policy == "OnFailure" and block["exitCode"] != 0)
        )
        if restart:
            c.last_state, c.restarts = {"terminated": block}, c.restarts + 1
            delay = min(self.settings.restart_backoff * 2 ** (c.restarts - 1), 10.0)
            who = f"{rt.name}_{rt.namespace}({rt.uid})"
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={c.name} pod={who}",
                }
            }
            self._event(rt, c, "Warning", "BackOff", f"Back-off restarting failed container {c.name} in pod {who}")
            timer = threading.Timer(delay, self._restart, (rt, c))
            timer.daemon = True
            rt.timers.append(timer)
            timer.start()
        else:
            c.state = {"terminated": block}
        self._publish(rt)
        if rt.terminating:
            self._maybe_finish(rt)

    def _restart(self, rt: PodRuntime, c: Container) -> None:
        with self._lock:
            if not (rt.terminating or rt.evicted or self._stop.is_set()):
                self._start(rt, c)
                self._publish(rt)

    # -- stopping ------------------------------------------------------------------------------------
    def _terminate(self, rt: PodRuntime, grace: int) -> None:
        """SIGTERM now and SIGKILL after ``grace`` seconds (at once when 0)."""
        first = not rt.terminating
        rt.terminating = True
        for timer in rt.timers:
            timer.cancel()
        for c in rt.containers:
            if c.alive and (first or grace == 0):
                if first:
                    self._event(rt, c, "Normal", "Killing", f"Stopping container {c.name}")
                if grace > 0:
                    c.signal(signal.SIGTERM, group=False)
                    timer = threading.Timer(grace, self._kill, (c,))
                    timer.daemon = True
                    rt.timers.append(timer)
                    timer.start()
                else:
                    c.signal(signal.SIGKILL, group=True)
        self._maybe_finish(rt)

    def _kill(self, c: Container) -> None:
        with self._lock:
            c.signal(signal.SIGKILL, group=True)

    def _maybe_finish(self, rt: PodRuntime) -> None:
        """Once no process is left: publish the final status, then let the API drop the pod."""
        if any(c.alive for c in rt.containers):
            return
        if rt.deleted:
            for timer in rt.timers:
                timer.cancel()
            self._ips.release(rt.ip)
            self.pods.pop(rt.uid, None)
            shutil.rmtree(rt.dir, ignore_errors=True)
            return
        self._publish(rt)
        self.api.maybe_remove("pods", rt.namespace, rt.name, uid=rt.uid)

    def evict(self, namespace: str, name: str, message: str) -> None:
        """Evict a running pod the way node-pressure eviction does (SIGKILL, phase Failed, reason Evicted)."""
        with self._lock:
            rt = next((r for r in self.pods.values() if (r.namespace, r.name) == (namespace, name)), None)
            if rt is None:
                raise KeyError(f"pod {namespace}/{name} is not running on {self.node.name}")
            rt.evicted = message
            for timer in rt.timers:
                timer.cancel()
            pod = self.store.get("pods", namespace, name)
            if pod is not None:
                self.recorder.record(pod, "Warning", "Evicted", message)
            for c in rt.containers:
                c.signal(signal.SIGKILL, group=True)
            self._publish(rt)

    # -- status --------------------------------------------------------------------------------------
    def _phase(self, rt: PodRuntime) -> str:
        states = [c.state for c in rt.containers]
        if rt.evicted:
            return "Failed"
        if all("terminated" in s for s in states):
            return "Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in states) else "Failed"
        if rt.terminating and not any(c.alive for c in rt.containers):
            return "Failed"
        return "Running" if all(c.container_id for c in rt.containers) else "Pending"

    def _publish(self, rt: PodRuntime) -> None:
        """Write the pod's status as the kubelet sees it now."""
        phase = self._phase(rt)
        statuses = [
            {
                "name": c.name,
                "image": normalize_image(c.spec["image"]),
                "imageID": c.image_id,
                "ready": "running" in c.state,
                "restartCount": c.restarts,
                "started": "running" in c.state,
                "state": copy.deepcopy(c.state),
                "lastState": copy.deepcopy(c.last_state),
                **({"containerID": c.container_id} if c.container_id else {}),
            }
            for c in rt.containers
        ]

        def update(pod: Obj) -> bool:
            if pod["metadata"]["uid"] != rt.uid:
                return False
            st = pod["status"]
            st.update(
                phase=phase,
                hostIP=self.node.ip,
                hostIPs=[{"ip": self.node.ip}],
                podIP=rt.ip,
                podIPs=[{"ip": rt.ip}],
                startTime=rt.started_at,
                containerStatuses=statuses,
            )
            done, unready = phase in TERMINAL, [c.name for c in rt.containers if "running" not in c.state]
            reason = "PodCompleted" if done else "ContainersNotReady"
            message = "" if done else f"containers with unready status: [{' '.join(unready)}]"
            set_condition(st, "PodReadyToStartContainers", not done)
            set_condition(st, "Initialized", True)
            for type_ in ("Ready", "ContainersReady"):
                if unready:
                    set_condition(st, type_, False, reason, message)
                else:
                    set_condition(st, type_, True)
            if rt.evicted:
                st.update(reason="Evicted", message=rt.evicted)
                set_condition(st, "DisruptionTarget", True, "TerminationByKubelet", rt.evicted)
            st["conditions"].sort(
                key=lambda c: _CONDITION_ORDER.index(c["type"]) if c["type"] in _CONDITION_ORDER else 99
            )
            return True

        self.store.update("pods", rt.namespace, rt.name, update)

    # -- memory limits -------------------------------------------------------------------------------
    def _watch_memory(self) -> None:
        """Poll RSS; a container over its memory limit is SIGKILLed and reported OOMKilled (exit 137)."""
        while not self._stop.wait(self.settings.memory_poll):
            with self._lock:
                watched = [c for rt in self.pods.values() for c in rt.containers if c.alive and c.memory_limit]
            for c in watched:
                limit = c.memory_limit
                if limit is not None and c.rss() > limit:
                    with self._lock:
                        if c.alive and not c.kill_reason:
                            c.kill_reason = "OOMKilled"
                            c.signal(signal.SIGKILL, group=True)

    # -- what the HTTP layer asks ----------------------------------------------------------------------
    def _runtime_for(self, namespace: str, name: str) -> tuple[Obj, PodRuntime | None]:
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        return pod, self.pods.get(pod["metadata"]["uid"])

    def log_file(self, namespace: str, name: str, container: str | None, previous: bool) -> tuple[Path, Container]:
        """The log file behind ``pods/log`` (400 errors worded like the real kubelet's)."""
        with self._lock:
            pod, rt = self._runtime_for(namespace, name)
            names = [c["name"] for c in pod["spec"]["containers"]]
            if container is None:
                if len(names) != 1:
                    raise bad_request(
                        f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
                    )
                container = names[0]
            if container not in names:
                raise bad_request(f"container {container} is not valid for pod {name}")
            c = next((c for c in rt.containers if c.name == container), None) if rt else None
            path = (c.prev_log if previous else c.log) if c else None
            if c is None or path is None:
                if previous:
                    raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                statuses = {s["name"]: s["state"] for s in pod["status"].get("containerStatuses", [])}
                reason = statuses.get(container, {}).get("waiting", {}).get("reason", "ContainerCreating")
                raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
            return path, c

    def pod_pids(self, namespace: str, name: str) -> tuple[str, list[int]]:
        """uid and live pids of a running pod (port-forward needs them)."""
        with self._lock:
            pod, rt = self._runtime_for(namespace, name)
            pids = [pid for c in rt.containers for pid in c.pids()] if rt else []
            if not pids:
                raise bad_request(
                    f"unable to upgrade connection: pod {name} is not running (phase {pod['status'].get('phase')})"
                )
            return pod["metadata"]["uid"], pids

    # -- shutdown ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill every process this kubelet started (by pid/process group) and wait for them."""
        self._stop.set()
        with self._lock:
            containers = [c for rt in self.pods.values() for c in rt.containers]
            for rt in self.pods.values():
                for timer in rt.timers:
                    timer.cancel()
            for c in containers:
                c.signal(signal.SIGKILL, group=True)
        for c in containers:
            if c.waiter is not None:
                c.waiter.join(timeout=10)
        self._monitor.join(timeout=5)
        shutil.rmtree(self.settings.root, ignore_errors=True)

    def leftover_pids(self) -> list[int]:
        """Processes this kubelet started that still exist (same pid *and* start time)."""
        left = []
        for pid, created in self.started:
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(pid)
            except psutil.Error:
                pass
        return left


def _fail_unstarted(uid: str) -> Any:
    def update(pod: Obj) -> bool:
        if pod["metadata"]["uid"] != uid:
            return False
        pod["status"]["phase"] = "Failed"
        return True

    return update
