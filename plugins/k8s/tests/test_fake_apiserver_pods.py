"""Pods as real local processes through the real ``kubernetes`` client: phases and container
states, environment and Secrets, scheduling and failures, deletion and garbage collection,
logs and port-forward, and the no-leftover-process guarantee."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from fake_apiserver import FakeApiServer, InClusterFiles, Node
from fake_apiserver.clientside import (
    log_lines,
    python_pod,
    raw_request,
    wait_event,
    wait_gone,
    wait_phase,
    wait_pod,
)
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

pytestmark = pytest.mark.timeout(60)
NS = "default"


def test_pod_runs_a_real_process(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    script = "import os; print(os.environ['HOSTNAME'], os.environ['POD_IP'], os.getpid(), flush=True)"
    created = k8s_core.create_namespaced_pod(NS, python_pod(script=script, generate="worker-"))
    name = created.metadata.name
    assert name.startswith("worker-") and len(name) == len("worker-") + 5
    assert created.status.phase == "Pending" and created.spec.service_account_name == "default"
    done = wait_phase(k8s_core, name, "Succeeded")
    (cs,) = done.status.container_statuses
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    assert cs.image_id.startswith("docker.io/library/python@sha256:") and cs.container_id.startswith("containerd://")
    assert done.status.pod_ip.startswith("127.") and done.status.pod_ip != "127.0.0.1"
    hostname, pod_ip, pid = k8s_core.read_namespaced_pod_log(name, NS).split()
    assert (hostname, pod_ip) == (name, done.status.pod_ip)
    assert int(pid) in fake_k8s.started_pids
    reasons = [e.reason for e in k8s_core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items]
    assert reasons == ["Scheduled", "Pulled", "Created", "Started"]


def test_watch_sees_the_phases_in_order(k8s_core: client.CoreV1Api) -> None:
    rv = k8s_core.list_namespaced_pod(NS).metadata.resource_version
    k8s_core.create_namespaced_pod(NS, python_pod("p", "import sys; sys.exit(3)"))
    seen: list[tuple[str, str, str | None]] = []
    w = watch.Watch()
    for ev in w.stream(k8s_core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=20):
        pod = ev["object"]
        seen.append((ev["type"], pod.status.phase, pod.spec.node_name))
        if pod.status.phase == "Failed":
            w.stop()
            terminated = pod.status.container_statuses[0].state.terminated
            assert (terminated.exit_code, terminated.reason) == (3, "Error")
    assert seen == [
        ("ADDED", "Pending", None),
        ("MODIFIED", "Pending", "fake-node"),  # bound by the scheduler
        ("MODIFIED", "Running", "fake-node"),
        ("MODIFIED", "Failed", "fake-node"),
    ]


def test_running_pod_status(k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_pod(NS, python_pod("sleeper", "import time; time.sleep(60)"))
    pod = wait_phase(k8s_core, "sleeper", "Running")
    (cs,) = pod.status.container_statuses
    assert cs.ready and cs.started and cs.state.running.started_at is not None and cs.restart_count == 0
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert pod.spec.node_name == "fake-node" and pod.status.host_ip == "127.0.0.1"
    k8s_core.delete_namespaced_pod("sleeper", NS, grace_period_seconds=0)


def test_start_error_and_restart_on_failure(k8s_core: client.CoreV1Api, tmp_path: Path) -> None:
    k8s_core.create_namespaced_pod(NS, python_pod("nocmd", command=["no-such-binary-here"]))
    failed = wait_phase(k8s_core, "nocmd", "Failed")
    terminated = failed.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (128, "StartError")
    assert "executable file not found" in terminated.message
    body = python_pod("entrypoint")
    del body["spec"]["containers"][0]["command"]  # would run the image's entrypoint: no images here
    k8s_core.create_namespaced_pod(NS, body)
    waiting = wait_pod(k8s_core, "entrypoint", lambda p: p.status.container_statuses is not None)
    assert waiting.status.container_statuses[0].state.waiting.reason == "CreateContainerError"
    assert k8s_core.read_namespaced_pod_status("entrypoint", NS).status.phase == "Pending"

    marker = tmp_path / "ran-once"
    script = (
        f"import os, sys; p = {str(marker)!r}; first = not os.path.exists(p); open(p, 'w').close(); sys.exit(first)"
    )
    body = python_pod("flaky", script)
    body["spec"]["restartPolicy"] = "OnFailure"
    k8s_core.create_namespaced_pod(NS, body)
    done = wait_phase(k8s_core, "flaky", "Succeeded")
    (cs,) = done.status.container_statuses
    assert cs.restart_count == 1 and cs.last_state.terminated.exit_code == 1
    assert wait_event(k8s_core, "flaky", "BackOff").type == "Warning"


def test_follow_logs(k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_pod(
        NS, python_pod("talker", "import time\nfor i in range(3): print(i, flush=True); time.sleep(0.2)")
    )
    wait_phase(k8s_core, "talker", "Running", "Succeeded")
    resp = k8s_core.read_namespaced_pod_log("talker", NS, follow=True, _preload_content=False, _request_timeout=20)
    lines = [line.decode() for line in resp.stream() for line in line.splitlines()]
    assert lines == ["0", "1", "2"]
    assert k8s_core.read_namespaced_pod_log("talker", NS, tail_lines=1) == "2\n"


def test_secret_crud_and_env_injection(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_secret(
        NS,
        {
            "metadata": {"name": "cookie"},
            "data": {"cookie": base64.b64encode(b"s3cret").decode()},
            "stringData": {"plain": "text"},
        },
    )
    secret = k8s_core.read_namespaced_secret("cookie", NS)
    assert secret.type == "Opaque" and secret.string_data is None
    assert {k: base64.b64decode(v) for k, v in secret.data.items()} == {"cookie": b"s3cret", "plain": b"text"}
    assert [s.metadata.name for s in k8s_core.list_namespaced_secret(NS).items] == ["cookie"]

    script = (
        "import os; print(os.environ['COOKIE'], os.environ['GREETING'], os.environ['MY_IP'] == os.environ['POD_IP'])"
    )
    env = [
        {"name": "COOKIE", "valueFrom": {"secretKeyRef": {"name": "cookie", "key": "cookie"}}},
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello-$(WHO)"},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    k8s_core.create_namespaced_pod(NS, python_pod("env", script, env=env))
    wait_phase(k8s_core, "env", "Succeeded")
    assert k8s_core.read_namespaced_pod_log("env", NS) == "s3cret hello-world True\n"
    spec_text = json.dumps(raw_request(fake_k8s, "GET", "/api/v1/namespaces/default/pods/env")[1]["spec"])
    assert "s3cret" not in spec_text
    status = k8s_core.delete_namespaced_secret("cookie", NS)  # typed "object" in this client
    assert status["status"] == "Success" and status["details"]["name"] == "cookie"
    wait_gone(k8s_core, "cookie", "secret")


def test_missing_secret_keeps_pod_pending_until_created(k8s_core: client.CoreV1Api) -> None:
    env = [{"name": "COOKIE", "valueFrom": {"secretKeyRef": {"name": "later", "key": "cookie"}}}]
    k8s_core.create_namespaced_pod(NS, python_pod("waits", "import os; print(os.environ['COOKIE'])", env=env))
    pod = wait_pod(
        k8s_core,
        "waits",
        lambda p: (
            bool(p.status.container_statuses)
            and p.status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"
        ),
    )
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.message == 'secret "later" not found'
    assert wait_event(k8s_core, "waits", "Failed").message == 'Error: secret "later" not found'
    with pytest.raises(ApiException) as err:
        k8s_core.read_namespaced_pod_log("waits", NS)
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        'container "main" in pod "waits" is waiting to start: CreateContainerConfigError'
    )
    k8s_core.create_namespaced_secret(NS, {"metadata": {"name": "later"}, "stringData": {"cookie": "ok"}})
    wait_phase(k8s_core, "waits", "Succeeded")
    assert k8s_core.read_namespaced_pod_log("waits", NS) == "ok\n"


def test_unschedulable_pods_stay_pending_with_events(k8s_core: client.CoreV1Api) -> None:
    big = python_pod("big", "import time; time.sleep(60)", resources={"requests": {"cpu": "6"}})
    k8s_core.create_namespaced_pod(NS, big)
    wait_phase(k8s_core, "big", "Running")
    k8s_core.create_namespaced_pod(NS, python_pod("second", resources={"requests": {"cpu": "4", "memory": "1Gi"}}))
    event = wait_event(k8s_core, "second", "FailedScheduling")
    assert event.type == "Warning" and event.message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    pod = k8s_core.read_namespaced_pod("second", NS)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    (cond,) = pod.status.conditions
    assert (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable")

    body = python_pod("picky")
    body["spec"]["nodeSelector"] = {"gpu": "a100"}
    k8s_core.create_namespaced_pod(NS, body)
    assert "didn't match Pod's node affinity/selector" in wait_event(k8s_core, "picky", "FailedScheduling").message

    k8s_core.delete_namespaced_pod("big", NS, grace_period_seconds=0)
    wait_phase(k8s_core, "second", "Succeeded")  # rescheduled once capacity freed up
    assert k8s_core.read_namespaced_pod("picky", NS).status.phase == "Pending"


def test_node_knobs() -> None:
    node = Node(labels={"gpu": "a100"}, allocatable={"cpu": "1", "memory": "1Gi", "pods": "1"})
    with FakeApiServer(node=node) as server, client.ApiClient(server.configuration()) as api_client:
        core = client.CoreV1Api(api_client)
        body = python_pod("gpu", "import time; time.sleep(60)")
        body["spec"]["nodeSelector"] = {"gpu": "a100"}
        core.create_namespaced_pod(NS, body)
        wait_phase(core, "gpu", "Running")
        core.create_namespaced_pod(NS, python_pod("more"))
        assert wait_event(core, "more", "FailedScheduling").message.startswith(
            "0/1 nodes are available: 1 Too many pods."
        )
    assert server.leftover_pids() == [] and server.internal_errors == []


def test_image_pull_backoff(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    fake_k8s.unpullable_images.add("example.com/missing:1")
    body = python_pod("nopull")
    body["spec"]["containers"][0]["image"] = "example.com/missing:1"
    k8s_core.create_namespaced_pod(NS, body)
    pod = wait_pod(
        k8s_core,
        "nopull",
        lambda p: (
            bool(p.status.container_statuses)
            and p.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
        ),
    )
    assert pod.status.phase == "Pending"
    assert wait_event(k8s_core, "nopull", "BackOff").message == 'Back-off pulling image "example.com/missing:1"'


def test_memory_limit_oomkills(k8s_core: client.CoreV1Api) -> None:
    script = "import time; x = b'x' * (300 << 20); time.sleep(30)"
    k8s_core.create_namespaced_pod(NS, python_pod("hog", script, resources={"limits": {"memory": "100Mi", "cpu": "1"}}))
    pod = wait_phase(k8s_core, "hog", "Failed")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")
    assert pod.status.qos_class == "Guaranteed"


def test_eviction(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_pod(NS, python_pod("victim", "import time; time.sleep(60)"))
    wait_phase(k8s_core, "victim", "Running")
    fake_k8s.evict(NS, "victim")
    pod = wait_pod(
        k8s_core, "victim", lambda p: p.status.phase == "Failed" and p.status.container_statuses[0].state.terminated
    )
    assert pod.status.reason == "Evicted" and pod.status.message.startswith("The node was low on resource: memory.")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    assert wait_event(k8s_core, "victim", "Evicted").type == "Warning"


def test_graceful_delete_sigterm_then_gone(k8s_core: client.CoreV1Api) -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('term', flush=True), time.sleep(0.3), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(60)"
    )
    k8s_core.create_namespaced_pod(NS, python_pod("graceful", script))
    assert log_lines(k8s_core, "graceful", 1) == ["up"]
    rv = k8s_core.read_namespaced_pod("graceful", NS).metadata.resource_version
    deleted = k8s_core.delete_namespaced_pod("graceful", NS, grace_period_seconds=10)
    assert deleted.metadata.deletion_timestamp is not None and deleted.metadata.deletion_grace_period_seconds == 10
    events = []
    w = watch.Watch()
    for ev in w.stream(k8s_core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=20):
        events.append((ev["type"], ev["object"].status.phase))
        if ev["type"] == "DELETED":
            w.stop()
            assert ev["object"].status.container_statuses[0].state.terminated.exit_code == 0
    assert events[0] == ("MODIFIED", "Running") and events[-1] == ("DELETED", "Succeeded")
    assert "Killing" in [e.reason for e in k8s_core.list_namespaced_event(NS).items]


def test_grace_period_expiry_kills(k8s_core: client.CoreV1Api) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    k8s_core.create_namespaced_pod(NS, python_pod("stubborn", script))
    assert log_lines(k8s_core, "stubborn", 1) == ["up"]
    start = time.monotonic()
    k8s_core.delete_namespaced_pod("stubborn", NS, grace_period_seconds=1)
    wait_gone(k8s_core, "stubborn")
    assert 0.9 < time.monotonic() - start < 10


def test_owner_references_garbage_collection(k8s_core: client.CoreV1Api) -> None:
    owner = k8s_core.create_namespaced_pod(NS, python_pod("driver", "import time; time.sleep(60)"))
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "driver", "uid": owner.metadata.uid, "controller": True}
    for name in ("w1", "w2"):
        body = python_pod(name, "import time; time.sleep(60)")
        body["metadata"]["ownerReferences"] = [ref]
        k8s_core.create_namespaced_pod(NS, body)
    k8s_core.create_namespaced_secret(
        NS, {"metadata": {"name": "owned", "ownerReferences": [ref]}, "stringData": {"k": "v"}}
    )
    orphan = python_pod("orphan", "import time; time.sleep(60)")
    orphan["metadata"]["ownerReferences"] = [{**ref, "uid": "00000000-0000-0000-0000-000000000000"}]
    k8s_core.create_namespaced_pod(NS, orphan)
    for name in ("w1", "w2"):
        wait_phase(k8s_core, name, "Running")
    wait_gone(k8s_core, "orphan")  # its owner never existed
    k8s_core.delete_namespaced_pod("driver", NS, grace_period_seconds=1)
    for name in ("driver", "w1", "w2"):
        wait_gone(k8s_core, name)
    wait_gone(k8s_core, "owned", "secret")


def test_orphan_propagation_keeps_dependents(k8s_core: client.CoreV1Api) -> None:
    owner = k8s_core.create_namespaced_secret(NS, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid}
    k8s_core.create_namespaced_secret(NS, {"metadata": {"name": "kept", "ownerReferences": [ref]}})
    k8s_core.delete_namespaced_secret("owner", NS, propagation_policy="Orphan")
    wait_gone(k8s_core, "owner", "secret")
    assert k8s_core.read_namespaced_secret("kept", NS).metadata.owner_references is None


def test_delete_collection_by_label(k8s_core: client.CoreV1Api) -> None:
    for name in ("x1", "x2", "y1"):
        body = python_pod(name, "import time; time.sleep(60)")
        body["metadata"]["labels"] = {"cluster": name[0]}
        k8s_core.create_namespaced_pod(NS, body)
    k8s_core.delete_collection_namespaced_pod(NS, label_selector="cluster=x", grace_period_seconds=0)
    assert [p.metadata.name for p in k8s_core.list_namespaced_pod(NS).items] == ["y1"]


ECHO = """
import os, socket
s = socket.socket(); s.bind((os.environ["BIND"], 0)); s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    while data := c.recv(4096):
        c.sendall(data.upper())
    c.close()
"""


def _echo_pod(core: client.CoreV1Api, name: str, env: list[dict[str, Any]]) -> int:
    core.create_namespaced_pod(NS, python_pod(name, ECHO, env=env))
    return int(log_lines(core, name, 1)[0])


def test_port_forward_relays_to_the_pod(k8s_core: client.CoreV1Api) -> None:
    port = _echo_pod(k8s_core, "echo", [{"name": "BIND", "value": "0.0.0.0"}])
    pf = portforward(k8s_core.connect_get_namespaced_pod_portforward, "echo", NS, ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(10)
    for payload in (b"hello", b"x" * 200_000):
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += sock.recv(65536)
        assert got == payload.upper()
    sock.close()
    assert pf.error(port) is None
    pod_ip = k8s_core.read_namespaced_pod("echo", NS).status.pod_ip
    with socket.create_connection((pod_ip, port), timeout=5) as direct:  # the in-cluster path
        direct.sendall(b"direct")
        assert direct.recv(100) == b"DIRECT"


def test_port_forward_needs_a_localhost_listener(k8s_core: client.CoreV1Api) -> None:
    """Like kubelet, port-forward dials localhost in the pod: a pod-IP-only listener is unreachable."""
    env = [
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "BIND", "value": "$(MY_IP)"},
    ]
    port = _echo_pod(k8s_core, "ipbound", env)
    pf = portforward(k8s_core.connect_get_namespaced_pod_portforward, "ipbound", NS, ports=str(port))
    sock = pf.socket(port)
    sock.settimeout(10)
    assert sock.recv(10) == b""
    assert "connection refused" in pf.error(port)
    pod_ip = k8s_core.read_namespaced_pod("ipbound", NS).status.pod_ip
    with socket.create_connection((pod_ip, port), timeout=5) as direct:
        direct.sendall(b"ok")
        assert direct.recv(100) == b"OK"


def test_port_forward_to_a_pod_that_is_not_running(k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_pod(NS, python_pod("done"))
    wait_phase(k8s_core, "done", "Succeeded")
    with pytest.raises(ApiException):
        portforward(k8s_core.connect_get_namespaced_pod_portforward, "done", NS, ports="80")


def test_https_end_to_end(fake_k8s: FakeApiServer, k8s_incluster: InClusterFiles, tmp_path: Path) -> None:
    """What the in-cluster mode uses, over TLS: create, watch, follow logs, port-forward."""
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        port = _echo_pod(core, "tls-echo", [{"name": "BIND", "value": "0.0.0.0"}])
        pf = portforward(core.connect_get_namespaced_pod_portforward, "tls-echo", NS, ports=str(port))
        sock = pf.socket(port)
        sock.settimeout(10)
        sock.sendall(b"over tls")
        assert sock.recv(100) == b"OVER TLS"
        sock.close()
    kube_cfg = client.Configuration()
    config.load_kube_config(str(fake_k8s.write_kubeconfig(tmp_path / "kc", https=True)), client_configuration=kube_cfg)
    assert kube_cfg.host.startswith("https://")
    with client.ApiClient(kube_cfg) as api_client:
        assert [p.metadata.name for p in client.CoreV1Api(api_client).list_namespaced_pod(NS).items] == ["tls-echo"]


def test_stop_kills_every_process() -> None:
    server = FakeApiServer().start()
    try:
        with client.ApiClient(server.configuration()) as api_client:
            core = client.CoreV1Api(api_client)
            sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
            script = f"import subprocess, sys, time; print(subprocess.Popen({sleeper}).pid, flush=True); time.sleep(60)"
            core.create_namespaced_pod(NS, python_pod("tree", script))
            child = int(log_lines(core, "tree", 1)[0])
            pids = [*server.started_pids, child]
    finally:
        server.stop()
    assert server.leftover_pids() == []

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    assert len(pids) == 2 and not any(alive(p) for p in pids)
