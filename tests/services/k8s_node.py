"""The node agent of ``tests/services/k8s``: what a kubelet does for the pods bound to one node.

Started by ``k8s up`` (as root, Python's standard library only). Against the real
kube-apiserver it

- registers the Node (client certificate ``system:node:NAME``: the Node authorizer and the
  NodeRestriction admission plugin apply to it as to a kubelet) and renews its status;
- watches the pods bound to it (``spec.nodeName``), and for each runs every container's
  ``command`` + ``args`` as a process of this machine's file system (its only "image":
  every image name is "present on the machine", except names whose registry ends in
  ``.invalid`` (RFC 2606: it can never resolve), which fail with ``ErrImagePull`` and
  ``ImagePullBackOff``; a ``python`` on ``PATH`` is ``--python``), in a network namespace of
  its own (``cck8s-<uid>``) whose ``eth0`` is on the bridge that ``k8s up`` made, at the
  pod's IP;
- puts each container in a memory (and cpu) cgroup with the pod's limits, so an
  ``OOMKilled`` is the kernel's verdict: its OOM killer's count in ``memory.oom_control``;
- reports phases, container states and conditions through ``pods/status``, posts events, and
  deletes a pod being deleted once its processes are gone (SIGTERM, the grace period,
  SIGKILL: every process of the container's cgroup);
- serves the kubelet API the apiserver proxies to, on HTTPS with client certificates:
  ``/containerLogs`` (``follow``, ``tailLines``, ``limitBytes``, ``previous``) and
  ``/portForward`` (WebSocket, ``v4.channel.k8s.io``; it dials ``localhost:PORT`` inside
  the pod's network namespace, as the kubelet does).

What it is not: there is no container image, no mount or pid namespace, no volumes, probes,
init containers or exec. ``--cleanup`` ends what a dead agent left behind (processes by their
cgroups, namespaces, veths) and exits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import faulthandler
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from k8s_websocket import WebSocket, accept_key  # beside this file (the fake API server's too)

log = logging.getLogger("k8s-node")
Obj = dict[str, Any]
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "clustercore-k8s"
CONTROLLERS = ("memory", "cpu", "pids")
NETNS_PREFIX = "cck8s-"
CLONE_NEWNET = 0x40000000
HEARTBEAT_SECONDS = 10
TERMINAL = ("Succeeded", "Failed")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(text: str | None) -> float | None:
    """A Kubernetes quantity as a number (bytes, or cores), ``None`` if absent."""
    if text is None:
        return None
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text).strip())
    if not m:
        return None
    suffixes = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 1 << 10, "Mi": 1 << 20}
    suffixes |= {"Gi": 1 << 30, "Ti": 1 << 40}
    return float(m.group(1)) * suffixes.get(m.group(2), 1)


# ---------------------------------------------------------------------------------------- the API
class Api:
    """A tiny client of the real API server: the node's client certificate, JSON in and out."""

    def __init__(self, server: str, ca: str, cert: str, key: str) -> None:
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.load_cert_chain(cert, key)
        self._local = threading.local()

    def _conn(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def call(self, method: str, path: str, body: Obj | None = None, ctype: str = "application/json") -> tuple[int, Obj]:
        conn = getattr(self._local, "conn", None)
        for attempt in range(2):
            if conn is None:
                conn = self._local.conn = self._conn(30)
            try:
                data = json.dumps(body).encode() if body is not None else None
                headers = {"Accept": "application/json"}
                if data is not None:
                    headers["Content-Type"] = ctype
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else {})
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def watch(self, path: str) -> Any:
        """Yield the events of a watch (``path`` without ``watch=1``) until the server ends it."""
        conn = self._conn(HEARTBEAT_SECONDS * 60)
        sep = "&" if "?" in path else "?"
        conn.request("GET", f"{path}{sep}watch=1&allowWatchBookmarks=true", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        try:
            if resp.status != 200:
                raise RuntimeError(f"watch {path}: {resp.status} {resp.read()[:300]!r}")
            while line := resp.readline():
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------- pods
@dataclass
class Container:
    spec: Obj
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restarts: int = 0
    cgroups: list[Path] = field(default_factory=list)
    killing: str = ""  # why the agent is killing it ("" when it is not)

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class Pod:
    uid: str
    namespace: str
    name: str
    ip: str
    netns: str
    dir: Path
    containers: list[Container]
    restart_policy: str
    started: str = field(default_factory=now)
    deleting: bool = False
    gone: bool = False  # the API object no longer exists
    lock: threading.RLock = field(default_factory=threading.RLock)


def short(uid: str) -> str:
    return uid.replace("-", "")[:12]


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


class Node:
    """The agent: one node, its pods, and the kubelet API server."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.node
        self.state = Path(args.state)
        self.state.mkdir(parents=True, exist_ok=True)
        pki = Path(args.pki)
        self.api = Api(args.apiserver, str(pki / "ca.crt"), str(pki / "node.crt"), str(pki / "node.key"))
        self.pki = pki
        self.bin = self.state / "image-bin"  # what the "image" adds to PATH
        self.bin.mkdir(exist_ok=True)
        if not (self.bin / "python").exists():
            (self.bin / "python").symlink_to(args.python)
        self.pods: dict[str, Pod] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.last_ip = 1
        self.host, _, port = args.listen.rpartition(":")
        self.port = int(port)

    # -- the Node object ----------------------------------------------------------------------
    def node_status(self) -> Obj:
        t = now()
        cond = [
            ("Ready", "True", "KubeletReady", "clustercore node agent is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent has sufficient memory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "node agent has sufficient PID available"),
        ]
        capacity = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {"type": a, "status": b, "reason": c, "message": d, "lastHeartbeatTime": t, "lastTransitionTime": t}
                for a, b, c, d in cond
            ],
            "addresses": [{"type": "InternalIP", "address": self.host}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "clustercore test node",
                "containerRuntimeVersion": "clustercore-node-agent://0.1",
                "kubeletVersion": self.args.kubelet_version,
                "kubeProxyVersion": self.args.kubelet_version,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
        }
        code, out = self.api.call("POST", "/api/v1/nodes", body)
        if code not in (201, 409):
            raise RuntimeError(f"registering node {self.name}: {code} {out.get('message')}")
        self.post_status()

    def post_status(self) -> None:
        code, out = self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": self.node_status()},
            "application/strategic-merge-patch+json",
        )
        if code != 200:
            log.warning("node status: %s %s", code, out.get("message"))

    def heartbeat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self.post_status()
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("heartbeat failed: %s", exc)

    # -- watching pods ------------------------------------------------------------------------
    def watch_pods(self) -> None:
        sel = urllib.parse.quote(f"spec.nodeName={self.name}")
        while not self.stopping.is_set():
            try:
                code, listed = self.api.call("GET", f"/api/v1/pods?fieldSelector={sel}")
                if code != 200:
                    raise RuntimeError(f"list pods: {code} {listed.get('message')}")
                seen = set()
                for pod in listed.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.on_pod("MODIFIED", pod)
                with self.lock:
                    vanished = [p for uid, p in self.pods.items() if uid not in seen]
                for p in vanished:
                    self.on_deleted(p)
                version = listed["metadata"]["resourceVersion"]
                while not self.stopping.is_set():
                    path = f"/api/v1/pods?fieldSelector={sel}&resourceVersion={version}&timeoutSeconds=300"
                    for event in self.api.watch(path):
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise RuntimeError(f"watch error: {obj.get('message')}")  # 410: list again
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") != "BOOKMARK":
                            self.on_pod(event["type"], obj)
            except Exception as exc:  # noqa: BLE001 - list again and go on
                if not self.stopping.is_set():
                    log.info("pod watch: %s; listing again", exc)
                    self.stopping.wait(1)

    def on_pod(self, kind: str, obj: Obj) -> None:
        meta = obj["metadata"]
        uid = meta["uid"]
        with self.lock:
            pod = self.pods.get(uid)
            if kind == "DELETED":
                if pod is not None:
                    self.on_deleted(pod)
                return
            if pod is None:
                phase = (obj.get("status") or {}).get("phase")
                if phase in TERMINAL:
                    if meta.get("deletionTimestamp"):
                        self.delete_object(meta["namespace"], meta["name"], uid)
                    return
                if (obj.get("status") or {}).get("containerStatuses") and phase == "Running":
                    self.lost(obj)  # from an agent before this one: its processes are gone
                    return
                if meta.get("deletionTimestamp"):
                    self.delete_object(meta["namespace"], meta["name"], uid)
                    return
                pod = self.admit(obj)
                threading.Thread(target=self.start_pod, args=(pod, obj), name=f"pod-{pod.name}", daemon=True).start()
                return
        if meta.get("deletionTimestamp") and not pod.deleting:
            pod.deleting = True
            grace = int(meta.get("deletionGracePeriodSeconds") or 0)
            threading.Thread(target=self.terminate, args=(pod, grace), daemon=True).start()

    def on_deleted(self, pod: Pod) -> None:
        pod.gone = True
        if not pod.deleting:
            pod.deleting = True
            threading.Thread(target=self.terminate, args=(pod, 0), daemon=True).start()

    def lost(self, obj: Obj) -> None:
        meta = obj["metadata"]
        statuses = []
        for c in obj["spec"]["containers"]:
            terminated = {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "startedAt": None,
                "finishedAt": now(),
            }
            statuses.append(self._status_of(c["name"], c["image"], {"terminated": terminated}, {}, 0, False))
        self.patch_status(meta["namespace"], meta["name"], {"phase": "Failed", "containerStatuses": statuses})

    def free_ip(self) -> str:
        """The next free address after the last one given: a reused IP with a new MAC would meet
        stale neighbour entries (connections time out until they expire)."""
        used = {p.ip for p in self.pods.values()}
        for step in range(1, 254):
            i = 2 + (self.last_ip - 2 + step) % 253
            ip = f"{self.args.pod_net}.{i}"
            if ip not in used:
                self.last_ip = i
                return ip
        raise RuntimeError("no pod IP left")

    def admit(self, obj: Obj) -> Pod:
        meta = obj["metadata"]
        uid = meta["uid"]
        d = self.state / "pods" / uid
        d.mkdir(parents=True, exist_ok=True)
        containers = [Container(spec=c, log=d / f"{c['name']}.log") for c in obj["spec"]["containers"]]
        pod = Pod(
            uid=uid,
            namespace=meta["namespace"],
            name=meta["name"],
            ip=self.free_ip(),
            netns=NETNS_PREFIX + short(uid),
            dir=d,
            containers=containers,
            restart_policy=obj["spec"].get("restartPolicy", "Always"),
        )
        self.pods[uid] = pod
        log.info("pod %s/%s: admitted at %s", pod.namespace, pod.name, pod.ip)
        return pod

    # -- starting -----------------------------------------------------------------------------
    def start_pod(self, pod: Pod, obj: Obj) -> None:
        try:
            self.make_netns(pod)
            self.publish(pod)
            for c in pod.containers:
                threading.Thread(target=self.run_container, args=(pod, c), daemon=True).start()
        except Exception as exc:
            log.exception("starting pod %s/%s", pod.namespace, pod.name)
            for c in pod.containers:
                c.state = {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            self.publish(pod)

    def make_netns(self, pod: Pod) -> None:
        host_if = "vcc" + short(pod.uid)[:10]
        (self.state / "made").mkdir(exist_ok=True)
        (self.state / "made" / pod.netns).write_text(host_if)
        if not Path("/run/netns", pod.netns).exists():
            run("ip", "netns", "add", pod.netns)
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", pod.netns, check=False)
        run("ip", "link", "set", host_if, "master", self.args.bridge, "up")
        run("ip", "-n", pod.netns, "link", "set", "lo", "up")
        run("ip", "-n", pod.netns, "addr", "replace", f"{pod.ip}/24", "dev", "eth0")
        run("ip", "-n", pod.netns, "link", "set", "eth0", "up")
        run("ip", "neigh", "flush", "to", pod.ip, "dev", self.args.bridge, check=False)  # a former pod's MAC

    def secret_value(self, namespace: str, name: str, key: str, optional: bool) -> str | None:
        code, out = self.api.call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if code == 404 or (code == 200 and key not in (out.get("data") or {})):
            if optional:
                return None
            if code == 404:
                raise LookupError(f'secret "{name}" not found')
            raise LookupError(f"couldn't find key {key} in Secret {namespace}/{name}")
        if code != 200:
            raise LookupError(f"secret {name}: {code} {out.get('message')}")
        return base64.b64decode(out["data"][key]).decode(errors="replace")

    def environment(self, pod: Pod, obj: Obj, c: Container) -> dict[str, str]:
        meta = obj["metadata"]
        fields = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.name,
            "spec.serviceAccountName": obj["spec"].get("serviceAccountName", ""),
            "status.hostIP": self.host,
            "status.podIP": pod.ip,
        }
        env: dict[str, str] = {
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": pod.name,
            "HOME": str(pod.dir / "home"),
            "KUBERNETES_SERVICE_HOST": self.host,
            "KUBERNETES_SERVICE_PORT": str(urllib.parse.urlsplit(self.args.apiserver).port),
        }
        for e in c.spec.get("env") or []:
            name, source = e["name"], e.get("valueFrom")
            if source is None:
                env[name] = expand(e.get("value", ""), env)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self.secret_value(meta["namespace"], ref["name"], ref["key"], bool(ref.get("optional")))
                if value is not None:
                    env[name] = value
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
                env[name] = (meta.get(m.group(1)) or {}).get(m.group(2), "") if m else fields.get(path, "")
        return env

    def run_container(self, pod: Pod, c: Container) -> None:
        backoff = 1.0
        while not pod.deleting:
            obj = self.get_pod(pod)
            if obj is None:
                return
            image = c.spec.get("image", "")
            if unpullable(image):
                why = (
                    f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": failed to resolve '
                    f'reference "{image}": dial tcp: lookup {image.split("/")[0]}: no such host'
                )
                self.event(pod, c, "Normal", "Pulling", f'Pulling image "{image}"')
                self.event(pod, c, "Warning", "Failed", f'Failed to pull image "{image}": {why}')
                self.event(pod, c, "Warning", "Failed", "Error: ErrImagePull")
                c.state = {"waiting": {"reason": "ErrImagePull", "message": why}}
                self.publish(pod)
                if self.stopping.wait(2) or pod.deleting:
                    return
                self.event(pod, c, "Normal", "BackOff", f'Back-off pulling image "{image}"')
                self.event(pod, c, "Warning", "Failed", "Error: ImagePullBackOff")
                c.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
                self.publish(pod)
                if self.stopping.wait(min(backoff, 30)) or pod.deleting:
                    return
                backoff *= 2
                continue
            try:
                env = self.environment(pod, obj, c)
            except LookupError as exc:
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                self.event(pod, c, "Warning", "Failed", f"Error: {exc}")
                self.publish(pod)
                if self.stopping.wait(2) or pod.deleting:
                    return
                continue
            if c.restarts == 0:
                self.event(pod, c, "Normal", "Pulled", f'Container image "{image}" already present on machine')
            code, reason, started, finished, message = self.run_process(pod, c, env)
            if code is None:  # could not start
                if self.stopping.wait(2) or pod.deleting:
                    return
                continue
            terminated = {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": finished,
                "containerID": self.container_id(pod, c),
            }
            if message:
                terminated["message"] = message
            policy = pod.restart_policy
            again = not pod.deleting and (policy == "Always" or (policy == "OnFailure" and code != 0))
            if not again:
                c.state = {"terminated": terminated}
                self.publish(pod)
                return
            c.last_state = {"terminated": terminated}
            c.restarts += 1
            delay = min(10 * 2 ** (c.restarts - 1), 300)
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay}s restarting failed container={c.name} pod={pod.name}_{pod.namespace}"
                    f"({pod.uid})",
                }
            }
            self.event(pod, c, "Warning", "BackOff", "Back-off restarting failed container")
            self.publish(pod)
            if self.stopping.wait(delay):
                return

    def container_id(self, pod: Pod, c: Container) -> str:
        return f"clustercore://{short(pod.uid)}-{c.name}-{c.restarts}"

    def make_cgroups(self, pod: Pod, c: Container) -> list[Path]:
        limits = (c.spec.get("resources") or {}).get("limits") or {}
        groups = []
        for controller in CONTROLLERS:
            base = CGROUP_ROOT / controller
            if not base.is_dir():
                continue
            g = base / CGROUP_NAME / f"{short(pod.uid)}-{c.name}"
            g.mkdir(parents=True, exist_ok=True)
            groups.append(g)
        for g in groups:
            if g.parent.parent.name == "memory":
                memory = quantity(limits.get("memory"))
                with contextlib.suppress(OSError):
                    (g / "memory.swappiness").write_text("0")
                (g / "memory.limit_in_bytes").write_text(str(int(memory)) if memory else "-1")
            elif g.parent.parent.name == "cpu":
                cpu = quantity(limits.get("cpu"))
                (g / "cpu.cfs_period_us").write_text("100000")
                (g / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpu * 100000))) if cpu else "-1")
        return groups

    def run_process(self, pod: Pod, c: Container, env: dict[str, str]) -> tuple[int | None, str, str, str, str]:
        """Run the container's command until it ends: (exit code, reason, startedAt, finishedAt, message)."""
        argv = [*(c.spec.get("command") or []), *(c.spec.get("args") or [])]
        argv = [expand(a, env) for a in argv]
        if not argv:
            msg = "this node runs `command` + `args` only: it has no image entrypoint to fall back on"
            c.state = {"waiting": {"reason": "CreateContainerError", "message": msg}}
            self.event(pod, c, "Warning", "Failed", f"Error: {msg}")
            self.publish(pod)
            return None, "", "", "", ""
        exe = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if exe is None or not os.access(exe, os.X_OK):
            # what runc says, through containerd, when the command cannot be executed
            msg = (
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                f'runc create failed: unable to start container process: exec: "{argv[0]}": '
                "executable file not found in $PATH: unknown"
            )
            self.event(pod, c, "Warning", "Failed", f"Error: {msg}")
            return 128, "StartError", now(), now(), msg
        groups = c.cgroups = self.make_cgroups(pod, c)
        (pod.dir / "home").mkdir(exist_ok=True)
        cwd = c.spec.get("workingDir") or str(pod.dir / "home")
        oom_before = oom_kills(groups)
        # sh joins the cgroups and the network namespace, then becomes the container's command
        wrapper = (
            'for g in $CC_NODE_CGROUPS; do echo $$ >"$g/cgroup.procs" || exit 127; done; '
            'unset CC_NODE_CGROUPS; exec nsenter --net="/run/netns/$0" -- "$@"'
        )
        with c.log.open("ab") as out:
            try:
                c.proc = subprocess.Popen(
                    ["/bin/sh", "-c", wrapper, pod.netns, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env={**env, "CC_NODE_CGROUPS": " ".join(map(str, groups))},
                    start_new_session=True,
                )
            except OSError as exc:
                c.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
                self.publish(pod)
                return None, "", "", "", ""
        started = now()
        c.state = {"running": {"startedAt": started}}
        self.event(pod, c, "Normal", "Created", f"Created container {c.name}")
        self.event(pod, c, "Normal", "Started", f"Started container {c.name}")
        self.publish(pod)
        rc = c.proc.wait()
        # like runc: once the container's first process is gone, so is the rest of it
        kill_cgroup(groups, signal.SIGKILL, 5)
        finished = now()
        code = rc if rc >= 0 else 128 - rc
        if oom_kills(groups) > oom_before and rc == -signal.SIGKILL:
            reason = "OOMKilled"
        elif code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        log.info("pod %s/%s container %s ended: %s (%s)", pod.namespace, pod.name, c.name, code, reason)
        return code, reason, started, finished, ""

    # -- ending -------------------------------------------------------------------------------
    def terminate(self, pod: Pod, grace: int) -> None:
        log.info("pod %s/%s: stopping (grace %s s, gone %s)", pod.namespace, pod.name, grace, pod.gone)
        with pod.lock:
            running = [c for c in pod.containers if c.proc is not None and c.proc.poll() is None]
            for c in running:
                self.event(pod, c, "Normal", "Killing", f"Stopping container {c.name}")
                kill_cgroup(c.cgroups, signal.SIGTERM, 0)
            deadline = time.monotonic() + grace
            for c in running:
                assert c.proc is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(max(0.0, deadline - time.monotonic()))
                if c.proc.poll() is None:
                    kill_cgroup(c.cgroups, signal.SIGKILL, 5)
                    c.proc.wait()
            # the container threads record the terminated states; give them a moment
            end = time.monotonic() + 5
            while time.monotonic() < end and any("running" in c.state for c in pod.containers):
                time.sleep(0.05)
            for c in pod.containers:
                if "terminated" not in c.state:
                    c.state = {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "ContainerStatusUnknown" if "waiting" in c.state else "Error",
                            "startedAt": None,
                            "finishedAt": now(),
                        }
                    }
            if not pod.gone:
                self.publish(pod)
                self.delete_object(pod.namespace, pod.name, pod.uid)
            self.cleanup_pod(pod)
            with self.lock:
                self.pods.pop(pod.uid, None)

    def delete_object(self, namespace: str, name: str, uid: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        code, out = self.api.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)
        log.info("pod %s/%s: deleted (%s)", namespace, name, code)
        if code not in (200, 202, 404, 409):
            log.warning("deleting pod %s/%s: %s %s", namespace, name, code, out.get("message"))

    def cleanup_pod(self, pod: Pod) -> None:
        for c in pod.containers:
            kill_cgroup(c.cgroups, signal.SIGKILL, 5)
            for g in c.cgroups:
                with contextlib.suppress(OSError):
                    g.rmdir()
        remove_netns(self.state, pod.netns)
        for f in pod.dir.glob("*.log"):
            f.unlink()
        subprocess.run(["rm", "-rf", str(pod.dir)], check=False)

    # -- status -------------------------------------------------------------------------------
    def get_pod(self, pod: Pod) -> Obj | None:
        code, obj = self.api.call("GET", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}")
        if code != 200 or obj["metadata"]["uid"] != pod.uid:
            return None
        return obj

    def _status_of(self, name: str, image: str, state: Obj, last: Obj, restarts: int, ready: bool) -> Obj:
        status: Obj = {
            "name": name,
            "image": image,
            "imageID": "",
            "state": state,
            "lastState": last,
            "ready": ready,
            "restartCount": restarts,
            "started": "running" in state,
        }
        for s in (state, last):
            for v in s.values():
                if v.get("containerID"):
                    status["containerID"] = v["containerID"]
        return status

    def publish(self, pod: Pod) -> None:
        with pod.lock:
            if pod.gone:
                return
            statuses = []
            for c in pod.containers:
                state = c.state
                if "running" in state:
                    state = {"running": state["running"]}
                statuses.append(
                    self._status_of(
                        c.name, c.spec.get("image", ""), state, c.last_state, c.restarts, "running" in state
                    )
                )
                if "running" in state:
                    statuses[-1]["containerID"] = self.container_id(pod, c)
                    statuses[-1]["imageID"] = (
                        "clustercore-node://" + hashlib.sha256(c.spec.get("image", "").encode()).hexdigest()[:16]
                    )
            states = [c.state for c in pod.containers]
            if all("terminated" in s for s in states):
                ok = all(s["terminated"]["exitCode"] == 0 for s in states)
                phase = "Succeeded" if ok else "Failed"
            elif any("running" in s for s in states) or any(c.restarts for c in pod.containers):
                phase = "Running"
            else:
                phase = "Pending"
            ready = all("running" in s for s in states)
            t = now()
            unready = [c.name for c in pod.containers if "running" not in c.state]
            why = (
                {}
                if ready
                else {
                    "reason": "ContainersNotReady",
                    "message": f"containers with unready status: [{' '.join(unready)}]",
                }
            )
            if phase in TERMINAL:
                why = {"reason": "PodCompleted"}
            conditions = [
                {"type": "Initialized", "status": "True", "lastTransitionTime": pod.started, "lastProbeTime": None},
                {"type": "Ready", "status": str(ready), "lastTransitionTime": t, "lastProbeTime": None, **why},
                {
                    "type": "ContainersReady",
                    "status": str(ready),
                    "lastTransitionTime": t,
                    "lastProbeTime": None,
                    **why,
                },
            ]
            status = {
                "phase": phase,
                "conditions": conditions,
                "hostIP": self.host,
                "podIP": pod.ip,
                "podIPs": [{"ip": pod.ip}],
                "startTime": pod.started,
                "containerStatuses": statuses,
                "qosClass": None,
            }
            status.pop("qosClass")
            self.patch_status(pod.namespace, pod.name, status, pod.uid)

    def patch_status(self, namespace: str, name: str, status: Obj, uid: str | None = None) -> None:
        body: Obj = {"status": status}
        if uid:
            body["metadata"] = {"uid": uid}
        code, out = self.api.call(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            body,
            "application/strategic-merge-patch+json",
        )
        if code not in (200, 404, 409):
            log.warning("status of pod %s/%s: %s %s", namespace, name, code, out.get("message"))

    def event(self, pod: Pod, c: Container, type_: str, reason: str, message: str) -> None:
        t = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "fieldPath": f"spec.containers{{{c.name}}}",
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
        }
        try:
            code, out = self.api.call("POST", f"/api/v1/namespaces/{pod.namespace}/events", body)
            if code != 201:
                log.info("event %s on %s: %s %s", reason, pod.name, code, out.get("message"))
        except OSError as exc:
            log.info("event %s on %s: %s", reason, pod.name, exc)

    # -- lifecycle ----------------------------------------------------------------------------
    def serve(self) -> None:
        self.register()
        server = KubeletServer((self.host, self.port), KubeletHandler, self)
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True).start()
        log.info("node %s: kubelet API on https://%s:%s", self.name, self.host, self.port)
        self.stopping.wait()
        server.shutdown()
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            pod.deleting = True
            pod.gone = True  # leave the API objects as they are: the processes are what we stop
            kill_all = [c for c in pod.containers if c.cgroups]
            for c in kill_all:
                kill_cgroup(c.cgroups, signal.SIGKILL, 5)
            self.cleanup_pod(pod)
        cleanup(self.state)


def unpullable(image: str) -> bool:
    """An image whose registry is under ``.invalid``: no pull can ever reach it."""
    first = image.split("/")[0]
    return "/" in image and first.split(":")[0].endswith(".invalid")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (``$$`` escapes); unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def procs_of(groups: list[Path]) -> set[int]:
    pids: set[int] = set()
    for g in groups:
        with contextlib.suppress(OSError, ValueError):
            pids |= {int(p) for p in (g / "cgroup.procs").read_text().split()}
    return pids


def kill_cgroup(groups: list[Path], sig: int, wait: float) -> None:
    """Signal every process in the container's cgroups; with ``wait``, until none is left."""
    deadline = time.monotonic() + wait
    while True:
        pids = procs_of(groups)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids or time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def oom_kills(groups: list[Path]) -> int:
    for g in groups:
        f = g / "memory.oom_control"
        if f.exists():
            for line in f.read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    return 0


def remove_netns(state: Path, netns: str) -> None:
    made = state / "made" / netns
    if not made.exists():
        return
    host_if = made.read_text().strip()
    if Path("/run/netns", netns).exists():
        out = run("ip", "netns", "pids", netns, check=False).stdout.split()
        for pid in out:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        run("ip", "netns", "del", netns, check=False)
    if host_if:
        run("ip", "link", "del", host_if, check=False)
    made.unlink()


def cleanup(state: Path) -> None:
    """What the agent (or a dead one) made: the pods' processes, cgroups and namespaces."""
    for controller in CONTROLLERS:
        base = CGROUP_ROOT / controller / CGROUP_NAME
        if not base.is_dir():
            continue
        for g in base.iterdir():
            if g.is_dir():
                kill_cgroup([g], signal.SIGKILL, 5)
                with contextlib.suppress(OSError):
                    g.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
    made = state / "made"
    if made.is_dir():
        for f in made.iterdir():
            remove_netns(state, f.name)


# ---------------------------------------------------------------------------------------- the kubelet API
class KubeletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], node: Node) -> None:
        self.allow_reuse_address = True
        super().__init__(addr, handler)
        self.node = node
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(node.pki / "kubelet.crt"), str(node.pki / "kubelet.key"))
        ctx.load_verify_locations(str(node.pki / "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the apiserver's kubelet-client certificate
        self.ctx = ctx

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


class KubeletHandler(BaseHTTPRequestHandler):
    server: KubeletServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kubelet api: " + format, *args)

    def send_text(self, code: int, text: str) -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def find(self, namespace: str, name: str) -> Pod | None:
        with self.server.node.lock:
            for pod in self.server.node.pods.values():
                if pod.namespace == namespace and pod.name == name:
                    return pod
        return None

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            return self.send_text(200, "ok")
        if len(parts) == 4 and parts[0] == "containerLogs":
            return self.logs(parts[1], parts[2], parts[3], query)
        if len(parts) >= 3 and parts[0] == "portForward":
            return self.port_forward(parts[1], parts[2], query)
        return self.send_text(404, "404 page not found")

    do_POST = do_GET

    def logs(self, namespace: str, name: str, container: str, query: dict[str, list[str]]) -> None:
        pod = self.find(namespace, name)
        c = next((c for c in pod.containers if c.name == container), None) if pod else None
        if pod is None or c is None:
            return self.send_text(404, f'pod "{name}" or container "{container}" not found on this node')
        if "waiting" in c.state and not c.log.exists():
            reason = c.state["waiting"].get("reason", "ContainerCreating")
            return self.send_text(400, f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        if query.get("previous", ["false"])[0] == "true":
            return self.send_text(400, f'previous terminated container "{container}" in pod "{name}" not found')
        follow = query.get("follow", ["false"])[0] == "true"
        tail = int(query["tailLines"][0]) if "tailLines" in query else None
        limit = int(query["limitBytes"][0]) if "limitBytes" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0

        def chunk(data: bytes) -> bool:
            nonlocal sent
            if limit is not None:
                data = data[: max(0, limit - sent)]
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                sent += len(data)
            return limit is None or sent < limit

        try:
            with c.log.open("rb") as f:
                data = f.read()
                if tail is not None:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-tail:]) if tail > 0 else b""
                more = chunk(data)
                while more and follow:
                    data = f.read(65536)
                    if data:
                        more = chunk(data)
                        continue
                    if "running" not in c.state and (c.proc is None or c.proc.poll() is not None):
                        more = chunk(f.read())  # what came after the last read
                        break
                    if pod.gone and not pod.containers:
                        break
                    time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        self.close_connection = True

    def port_forward(self, namespace: str, name: str, query: dict[str, list[str]]) -> None:
        pod = self.find(namespace, name)
        if pod is None:
            return self.send_text(404, f'pod "{name}" not found on this node')
        if not any("running" in c.state for c in pod.containers):
            return self.send_text(500, f'pod "{name}" has no running container: its network namespace is gone')
        if self.headers.get("Upgrade", "").lower() != "websocket":
            return self.send_text(400, "this node agent serves port-forward over WebSocket (v4.channel.k8s.io) only")
        try:
            # the apiserver passes the client's ports=P as port=P
            values = query.get("port", []) + query.get("ports", [])
            ports = [int(p) for v in values for p in v.split(",") if p.strip()]
            if not ports or not all(0 < p < 65536 for p in ports):
                raise ValueError
        except ValueError:
            return self.send_text(400, "invalid port")
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocol = next((p for p in offered if p in ("v4.channel.k8s.io", "portforward.k8s.io")), "")
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = accept_key(key)
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        if protocol:
            self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        ws = WebSocket(self.connection, self.rfile)
        forward(ws, pod, ports)
        self.close_connection = True


_libc = ctypes.CDLL(None, use_errno=True)


def dial_in_netns(netns: str, port: int) -> socket.socket:
    """``localhost:port`` inside the pod's network namespace (a thread joins it, dials, ends)."""
    result: list[Any] = []

    def dial() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            result.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError as exc:
            result.append(exc)

    t = threading.Thread(target=dial, daemon=True)
    t.start()
    t.join()
    if isinstance(result[0], Exception):
        raise result[0]
    sock: socket.socket = result[0]
    sock.settimeout(None)
    return sock


def forward(ws: WebSocket, pod: Pod, ports: list[int]) -> None:
    """One port-forward session: channel 2i carries port i's data, 2i+1 its errors."""
    socks: list[socket.socket | None] = []
    dones: list[threading.Event] = []
    for i, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        ws.send(0x2, bytes([2 * i]) + prefix)
        ws.send(0x2, bytes([2 * i + 1]) + prefix)
    for i, port in enumerate(ports):
        done = threading.Event()
        sock: socket.socket | None
        try:
            sock = dial_in_netns(pod.netns, port)
            threading.Thread(target=pump, args=(ws, 2 * i, sock, done), daemon=True).start()
        except OSError as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc.strerror or str(exc)
            msg = (
                f"error forwarding port {port} to pod {pod.uid}, uid : failed to connect to localhost:{port} "
                f'inside namespace "{pod.netns}", IPv4: dial tcp4 127.0.0.1:{port}: connect: {why} '
            )
            ws.send(0x2, bytes([2 * i + 1]) + msg.encode())
            sock = None
            done.set()
        socks.append(sock)
        dones.append(done)

    def close_when_done() -> None:
        for d in dones:
            d.wait()
        ws.close()

    threading.Thread(target=close_when_done, daemon=True).start()
    try:
        while True:
            opcode, data = ws.recv()
            if opcode == 0x8:
                ws.close()
                return
            if data and data[0] % 2 == 0 and data[0] // 2 < len(socks):
                target = socks[data[0] // 2]
                if target is not None and len(data) > 1:
                    with contextlib.suppress(OSError):
                        target.sendall(data[1:])
    except (EOFError, OSError):
        pass
    finally:
        for s in socks:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def pump(ws: WebSocket, channel: int, sock: socket.socket, done: threading.Event) -> None:
    try:
        while data := sock.recv(65536):
            ws.send(0x2, bytes([channel]) + data)
    except OSError:
        pass
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--state", required=True, help="the agent's directory (pods' logs, what it made)")
    p.add_argument("--cleanup", action="store_true", help="end what a previous agent left, then exit")
    p.add_argument("--node", default="cck8s-node")
    p.add_argument("--kubeconfig", help="(for the record: the node's credentials are read from --pki)")
    p.add_argument("--pki")
    p.add_argument("--apiserver")
    p.add_argument("--listen", default="127.0.0.1:10250")
    p.add_argument("--bridge", default="cck8s0")
    p.add_argument("--pod-net", default="10.201.0")
    p.add_argument("--pidfile-dir")
    p.add_argument("--python", default="/usr/bin/python3", help="the image's `python`")
    p.add_argument("--cpu", default="8")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--kubelet-version", default="v1.20.2")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    state = Path(args.state)
    if args.cleanup:
        cleanup(state)
        return 0
    cleanup(state)  # a previous agent's leftovers
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every thread's stack in the log
    node = Node(args)
    signal.signal(signal.SIGTERM, lambda *_: node.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: node.stopping.set())
    node.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
