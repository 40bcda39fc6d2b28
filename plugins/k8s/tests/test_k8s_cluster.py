"""K8sManager against the fake API server: pods, transports, the cookie, pending and failing pods,
termination reasons, ownerReferences and removal."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
from typing import Any

import psutil
import pytest
from clustercore_k8s import K8sLaunchError, PodWarning
from clustercore_k8s.kubeapi import Gone, KubeApi, load_connection
from clustercore_k8s.podspec import LABEL_CLUSTER, LABEL_PID, cluster_selector
from clustercore_k8s.tracker import PodTracker
from fake_apiserver import FakeApiServer, InClusterFiles
from fake_apiserver.clientside import python_pod, raw_request, wait_gone, wait_phase
from k8s_testing import IMAGE, NS, SMALL, plugin_objects, two_fit_cpu
from kubernetes import client
from real_apiserver import real_mode

import clustercore as cc
from clustercore.testing import wait_removed, worker_info

pytestmark = pytest.mark.timeout(120)


def _pods(core: client.CoreV1Api) -> dict[str, Any]:
    """The plugin's pods by name, as the API server stores them (raw JSON)."""
    names, _ = plugin_objects(core)
    return {name: json.loads(core.read_namespaced_pod(name, NS, _preload_content=False).data) for name in names}


def _pod_of(core: client.CoreV1Api, pid: int) -> str:
    (name,) = [n for n, p in _pods(core).items() if p["metadata"]["labels"].get(LABEL_PID) == str(pid)]
    return name


def _innermost_pid(pid: int) -> int:
    """A process's pid in its own pid namespace (a container's, under a real kubelet)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[-1]) for line in status if line.startswith("NSpid:"))


def _hog() -> int:
    hog = b"x" * (400 << 20)  # written, so resident: well over the 200Mi limit
    time.sleep(60)
    return len(hog)


def test_four_pods_call_each_other(outside: object, k8s_core: client.CoreV1Api) -> None:
    pids = cc.addprocs("k8s", n=4, **SMALL)
    assert pids == sorted(pids) and len(pids) == 4
    pods = _pods(k8s_core)
    assert sorted(p["metadata"]["labels"][LABEL_PID] for p in pods.values()) == sorted(map(str, pids))
    assert all(name.startswith("cc-worker-") for name in pods)
    names = {p: cc.remotecall_fetch(lambda: os.environ["POD_NAME"], p) for p in pids}
    assert sorted(names.values()) == sorted(pods)
    pairs = {(a, b) for a in pids for b in pids if a != b}
    answers = {(a, b): cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), a, b) for a, b in pairs}
    assert answers == {(a, b): b for a, b in pairs}
    w = cc.remotecall_fetch(lambda other: cc.remotecall_fetch(lambda: os.environ["POD_IP"], other), pids[0], pids[1])
    assert w == pods[names[pids[1]]]["status"]["podIP"]


@pytest.mark.parametrize(
    ("mode", "transport", "family"),
    [
        ("inside", "auto", socket.AF_INET),  # a TCP link to the pod IP
        ("outside", "auto", socket.AF_UNIX),  # the client's port-forward socket pair
        ("outside", "pod-ip", socket.AF_INET),
        ("inside", "port-forward", socket.AF_UNIX),
    ],
)
def test_transport(
    mode: str, transport: str, family: int, request: pytest.FixtureRequest, k8s_core: client.CoreV1Api
) -> None:
    request.getfixturevalue(mode)
    first, second = cc.addprocs("k8s", n=2, transport=transport, **SMALL)
    pod = _pods(k8s_core)[_pod_of(k8s_core, first)]
    w = worker_info(first)
    sock = w.link
    assert sock is not None and sock.family == family
    if family == socket.AF_INET:
        assert sock.getpeername()[0] == pod["status"]["podIP"]
    assert w.connect_at == (pod["status"]["podIP"], w.config.port)  # type: ignore[union-attr]
    assert cc.remotecall_fetch(lambda other: cc.remotecall_fetch(cc.myid, other), first, second) == second


def test_pod_spec(outside: object, k8s_core: client.CoreV1Api) -> None:
    (pid,) = cc.addprocs(
        "k8s",
        n=1,
        image=IMAGE,
        cpu="500m",
        memory="512Mi",
        labels={"team": "ml"},
        env={"GREETING": "hi"},
        node_selector={"kubernetes.io/os": "linux"},
        tolerations=[{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_policy="IfNotPresent",
    )
    pod = _pods(k8s_core)[_pod_of(k8s_core, pid)]
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["generateName"] == "cc-worker-" and "ownerReferences" not in meta
    assert meta["labels"]["team"] == "ml" and meta["labels"][LABEL_PID] == str(pid) and LABEL_CLUSTER in meta["labels"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"key": "spot", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (container,) = spec["containers"]
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    assert container["command"][:2] == ["sh", "-c"] and container["command"][3:6] == [
        sys.executable,
        "-m",
        "clustercore",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["CLUSTERCORE_COOKIE"]["valueFrom"]["secretKeyRef"]["key"] == "cookie"
    assert env["GREETING"]["value"] == "hi" and env["OMP_NUM_THREADS"]["value"] == "1"
    assert cc.remotecall_fetch(lambda: (os.environ["GREETING"], "CLUSTERCORE_COOKIE" in os.environ), pid) == (
        "hi",
        False,
    )


def test_no_cookie_in_pod_spec_labels_argv_or_worker_environment(
    outside: object, k8s_api: Any, k8s_core: client.CoreV1Api
) -> None:
    pids = cc.addprocs("k8s", n=2, **SMALL)
    cookie = cc.cluster_cookie()
    for name in plugin_objects(k8s_core)[0]:
        status, body = raw_request(k8s_api, "GET", f"/api/v1/namespaces/{NS}/pods/{name}")
        assert status == 200 and cookie not in json.dumps(body)
    (secret_name,) = plugin_objects(k8s_core, "secret")[0]
    secret = k8s_core.read_namespaced_secret(secret_name, NS)
    assert base64.b64decode(secret.data["cookie"]).decode() == cookie  # it travels in the Secret only
    processes = [psutil.Process(p) for p in k8s_api.started_pids if psutil.pid_exists(p)]
    processes += [child for p in processes for child in p.children(recursive=True)]
    assert processes
    for proc in processes:
        assert cookie not in " ".join(proc.cmdline())
        assert cookie not in open(f"/proc/{proc.pid}/environ", "rb").read().decode(errors="replace")
    assert {worker_info(p).ospid for p in pids} <= {_innermost_pid(p.pid) for p in processes}


def test_rmprocs_deletes_the_pod_and_waits_for_it(outside: object, k8s_core: client.CoreV1Api) -> None:
    first, second = cc.addprocs("k8s", n=2, **SMALL)
    name = _pod_of(k8s_core, first)
    cc.rmprocs(first)
    assert name not in plugin_objects(k8s_core)[0]  # gone by the time rmprocs returns
    assert cc.remotecall_fetch(cc.myid, second) == second
    assert len(plugin_objects(k8s_core, "secret")[0]) == 1  # the cluster still has a worker


def test_pending_pod_is_deleted_and_the_cluster_continues(outside: object, k8s_core: client.CoreV1Api) -> None:
    with pytest.warns(
        PodWarning,
        match=r"still Pending after 2 s: FailedScheduling: 0/1 nodes are available: "
        r"1 Insufficient cpu",
    ) as caught:
        pids = cc.addprocs("k8s", n=3, image=IMAGE, cpu=two_fit_cpu(k8s_core), memory="256Mi", pending_timeout=2)
    assert len(pids) == 2 and len([w for w in caught if w.category is PodWarning]) == 1
    assert len(plugin_objects(k8s_core)[0]) == 2
    assert [cc.remotecall_fetch(cc.myid, p) for p in pids] == pids


def test_pending_pod_below_min_workers_fails_the_launch(outside: object, k8s_core: client.CoreV1Api) -> None:
    with pytest.warns(PodWarning), pytest.raises(K8sLaunchError) as info:
        cpu = two_fit_cpu(k8s_core)
        cc.addprocs("k8s", n=3, image=IMAGE, cpu=cpu, memory="256Mi", pending_timeout=2, min_workers=3)
    assert "only 2 of 3 worker pods started" in str(info.value) and "Insufficient cpu" in str(info.value)
    assert cc.procs() == [1]


def test_workers_that_cannot_start_fail_the_launch(outside: object) -> None:
    with pytest.warns(PodWarning), pytest.raises(K8sLaunchError) as info:
        cc.addprocs("k8s", n=2, exename="no-such-python", **SMALL)
    text = str(info.value)
    assert "only 0 of 2" in text and "exit code 127" in text and "no-such-python" in text


@pytest.mark.parametrize("mode", ["outside", "inside"])
def test_oomkilled_mid_call_names_the_reason(
    mode: str, request: pytest.FixtureRequest, k8s_core: client.CoreV1Api
) -> None:
    request.getfixturevalue(mode)
    (pid,) = cc.addprocs("k8s", n=1, image=IMAGE, cpu="500m", memory="200Mi")
    name = _pod_of(k8s_core, pid)
    call = cc.remotecall(_hog, pid)
    with pytest.raises(cc.ProcessExitedException) as info:
        call.fetch()
    assert f"pod {name} OOMKilled (exit code 137)" in str(info.value)
    assert info.value.worker_id == pid
    assert pid not in cc.procs()
    with pytest.raises(cc.ProcessExitedException, match="OOMKilled"):
        cc.remotecall_fetch(cc.myid, pid)


def test_evicted_pod_names_the_reason(outside: object, fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    (pid,) = cc.addprocs("k8s", n=1, **SMALL)
    name = _pod_of(k8s_core, pid)
    call = cc.remotecall(time.sleep, pid, 60)
    fake_k8s.evict(NS, name)
    with pytest.raises(cc.ProcessExitedException, match=f"pod {name} Evicted: The node was low on resource: memory"):
        call.fetch()


def test_pod_deleted_by_someone_else(outside: object, k8s_core: client.CoreV1Api) -> None:
    pids = cc.addprocs("k8s", n=2, **SMALL)
    name = _pod_of(k8s_core, pids[0])
    call = cc.remotecall(time.sleep, pids[0], 60)
    k8s_core.delete_namespaced_pod(name, NS)  # kubectl delete pod
    with pytest.raises(cc.ProcessExitedException, match=f"pod {name} was deleted"):
        call.fetch()
    assert cc.remotecall_fetch(cc.myid, pids[1]) == pids[1]


def test_watch_resumes_after_the_server_ends_it(
    outside: object, fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api
) -> None:
    fake_k8s.max_watch_seconds = 0.3  # every watch ends quickly; compaction forces a 410 and a new list
    (pid,) = cc.addprocs("k8s", n=1, **SMALL)
    name = _pod_of(k8s_core, pid)
    fake_k8s.compact()
    call = cc.remotecall(time.sleep, pid, 60)
    assert cc.remotecall_fetch(cc.myid, pid) == pid
    fake_k8s.evict(NS, name)
    with pytest.raises(cc.ProcessExitedException, match="Evicted"):
        call.fetch()


def test_a_watch_from_a_version_the_server_dropped_is_gone_and_the_tracker_lists_again(
    outside: object, k8s_api: Any, k8s_core: client.CoreV1Api
) -> None:
    """A 410 Gone from the server under test: the fake's after ``compact()``; the real API
    server's for a resourceVersion older than its watch cache begins (``tests/services/k8s``
    writes to etcd before it starts the API server, so 1 always is). The tracker lists again and
    finds the pod its stale watch missed."""
    (pid,) = cc.addprocs("k8s", n=1, **SMALL)
    name = _pod_of(k8s_core, pid)
    stale = "1"
    if not real_mode():
        k8s_api.compact()
    api = KubeApi(load_connection())
    tracker = PodTracker(api, cluster_selector(), lambda state: None)
    try:
        with pytest.raises(Gone):
            next(iter(api.watch_pods(cluster_selector(), stale, 5)))
        watcher = threading.Thread(target=tracker._run, args=(stale,), daemon=True)
        watcher.start()
        with tracker.changed:
            assert tracker.changed.wait_for(lambda: name in tracker.pods, timeout=20)
        assert tracker.pods[name].running
    finally:
        tracker.stop()
        api.close()


def test_driver_pod_deleted_takes_the_workers_with_it(
    inside: InClusterFiles, k8s_core: client.CoreV1Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = python_pod("the-driver", "import time; time.sleep(120)", image="example.com/team/driver:7")
    uid = k8s_core.create_namespaced_pod(NS, driver).metadata.uid
    wait_phase(k8s_core, "the-driver", "Running")
    monkeypatch.setenv("POD_NAME", "the-driver")  # this test process plays the driver in that pod
    pids = cc.addprocs("k8s", n=2, cpu="500m", memory="512Mi")  # no image: the driver's
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "the-driver", "uid": uid}
    for pod in _pods(k8s_core).values():
        assert pod["metadata"]["ownerReferences"] == [owner]
        assert pod["spec"]["containers"][0]["image"] == "example.com/team/driver:7"
    (secret,) = plugin_objects(k8s_core, "secret")[0]
    assert k8s_core.read_namespaced_secret(secret, NS).metadata.owner_references[0].uid == uid
    calls = [cc.remotecall(time.sleep, p, 60) for p in pids]
    k8s_core.delete_namespaced_pod("the-driver", NS, grace_period_seconds=0)
    for call in calls:
        with pytest.raises(cc.ProcessExitedException, match="was deleted"):
            call.fetch()
    assert wait_removed(pids, 30) == [] and cc.procs() == [1]
    wait_gone(k8s_core, "the-driver")


def test_kubeconfig_namespace_and_explicit_path(
    k8s_clean: None, k8s_api: Any, k8s_core: client.CoreV1Api, tmp_path: Any
) -> None:
    from k8s_testing import wait_none_left

    path = k8s_api.write_kubeconfig(tmp_path / "other", namespace="kube-public")
    (pid,) = cc.addprocs("k8s", n=1, kubeconfig=path, **SMALL)
    assert cc.remotecall_fetch(lambda: os.environ["POD_NAMESPACE"], pid) == "kube-public"
    assert len(plugin_objects(k8s_core, "pod", "kube-public")[0]) == 1
    cc.rmprocs(pid)
    assert wait_none_left(k8s_core, "kube-public") == ([], [])


def test_unknown_namespace_is_a_clear_error(outside: object) -> None:
    with pytest.raises(Exception, match='namespaces "nowhere" not found'):
        cc.addprocs("k8s", n=1, namespace="nowhere", **SMALL)
    assert cc.procs() == [1]


def test_in_a_pod_that_cannot_be_found_the_image_is_required(inside: InClusterFiles) -> None:
    with pytest.raises(ValueError, match=r"needs image=.*POD_NAME"):
        cc.addprocs("k8s", n=1, cpu="500m", memory="512Mi")
    assert cc.procs() == [1]
