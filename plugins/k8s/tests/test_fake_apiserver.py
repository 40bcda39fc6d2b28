"""The fake API server's API surface through the real ``kubernetes`` client: discovery, client
configuration, auth, validation, selectors, patch, watch semantics and the wire format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_apiserver import FakeApiServer, InClusterFiles
from fake_apiserver.clientside import python_pod, raw_request, wait_phase
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.timeout(60)
NS = "default"


def test_version_discovery_and_namespaces(k8s_client: client.ApiClient, k8s_core: client.CoreV1Api) -> None:
    info = client.VersionApi(k8s_client).get_code()
    assert (info.major, info.minor, info.platform) == ("1", "37", "linux/amd64")
    assert client.CoreApi(k8s_client).get_api_versions().versions == ["v1"]
    names = {r.name for r in k8s_core.get_api_resources().resources}
    assert {"pods", "pods/portforward", "pods/log", "secrets", "events", "namespaces"} <= names
    assert {"default", "kube-system"} <= {n.metadata.name for n in k8s_core.list_namespace().items}
    assert k8s_core.read_namespace(NS).status.phase == "Active"
    with pytest.raises(ApiException) as err:
        k8s_core.read_namespace("nope")
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'namespaces "nope" not found'
    assert k8s_core.list_namespaced_pod("nope").items == []  # like the real server


def test_kubeconfig(k8s_kubeconfig: Path) -> None:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(k8s_kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        assert client.CoreV1Api(api_client).list_namespaced_pod(NS).items == []


def test_incluster_config_over_https(k8s_incluster: InClusterFiles) -> None:
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    assert cfg.host.startswith("https://127.0.0.1:")
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        assert core.read_namespace(k8s_incluster.namespace_file.read_text()).metadata.name == NS


def test_requests_need_the_token(fake_k8s: FakeApiServer) -> None:
    with client.ApiClient(client.Configuration(host=fake_k8s.url)) as anonymous:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(anonymous).list_namespaced_pod(NS)
        assert err.value.status == 401
        assert client.VersionApi(anonymous).get_code().major == "1"  # /version is public


def test_namespaces_and_service_accounts(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespace({"metadata": {"name": "team-a"}})
    assert [sa.metadata.name for sa in k8s_core.list_namespaced_service_account("team-a").items] == ["default"]
    status, body = raw_request(fake_k8s, "POST", "/api/v1/namespaces", {"metadata": {"name": "Team.B"}})
    assert status == 422 and "RFC 1123 label" in body["message"]
    k8s_core.create_namespaced_service_account("team-a", {"metadata": {"name": "robot"}})
    body = python_pod("p")
    body["spec"]["serviceAccountName"] = "robot"
    assert k8s_core.create_namespaced_pod("team-a", body).spec.service_account_name == "robot"
    assert raw_request(fake_k8s, "DELETE", "/api/v1/namespaces/team-a")[0] == 405


def test_label_and_field_selectors(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {"app": "x"})):
        body = python_pod(name)
        body["metadata"]["labels"] = labels
        k8s_core.create_namespaced_pod(NS, body)

    def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in k8s_core.list_namespaced_pod(NS, **kw).items]

    assert names(label_selector="app=x") == ["a", "c"]
    assert names(label_selector="app==x,tier") == ["a"]
    assert names(label_selector="app!=x") == ["b"]
    assert names(label_selector="app in (x, y),!tier") == ["b", "c"]
    assert names(label_selector="app notin (x)") == ["b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="app") == ["a", "c"]
    for name in "abc":
        wait_phase(k8s_core, name, "Succeeded")
    assert names(field_selector="status.phase=Succeeded") == ["a", "b", "c"]
    assert names(field_selector="status.phase=Running") == []
    everywhere = k8s_core.list_pod_for_all_namespaces(label_selector="app=x").items
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere] == [(NS, "a"), (NS, "c")]
    assert raw_request(fake_k8s, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%20in%20()")[0] == 400
    status, body = raw_request(fake_k8s, "GET", "/api/v1/namespaces/default/pods?fieldSelector=spec.foo%3Dx")
    assert (status, body["message"]) == (400, "field label not supported: spec.foo")
    page = k8s_core.list_namespaced_pod(NS, limit=2)
    assert len(page.items) == 2 and page.metadata.remaining_item_count == 1
    assert [p.metadata.name for p in k8s_core.list_namespaced_pod(NS, _continue=page.metadata._continue).items] == ["c"]


def test_pod_validation_is_strict(fake_k8s: FakeApiServer) -> None:
    path = "/api/v1/namespaces/default/pods"
    status, body = raw_request(fake_k8s, "POST", path, python_pod("Bad_Name"))
    assert (status, body["reason"]) == (422, "Invalid") and causes(body) == {("metadata.name", "FieldValueInvalid")}
    assert body["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123'
    )
    status, body = raw_request(fake_k8s, "POST", path, {"metadata": {"name": "x"}, "spec": {"containers": []}})
    assert status == 422 and causes(body) == {("spec.containers", "FieldValueRequired")}
    status, body = raw_request(fake_k8s, "POST", path, {"metadata": {}, "spec": {"containers": [{"name": "Main"}]}})
    assert causes(body) == {
        ("metadata.name", "FieldValueRequired"),
        ("spec.containers[0].name", "FieldValueInvalid"),
        ("spec.containers[0].image", "FieldValueRequired"),
    }
    bad = python_pod("x")
    bad["spec"]["restartPolicy"] = "Sometimes"
    bad["spec"]["containers"][0]["env"] = [
        {"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]
    bad["spec"]["containers"][0]["resources"] = {"limits": {"memory": "1Gi"}, "requests": {"memory": "2Gi"}}
    status, body = raw_request(fake_k8s, "POST", path, bad)
    assert causes(body) == {
        ("spec.restartPolicy", "FieldValueNotSupported"),
        ("spec.containers[0].env[0].valueFrom", "FieldValueInvalid"),
        ("spec.containers[0].resources.requests", "FieldValueInvalid"),
    }
    assert (
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure"'
        in body["message"]
    )
    bad = python_pod("x", resources={"limits": {"memory": "12XB"}})
    status, body = raw_request(fake_k8s, "POST", path, bad)
    assert status == 400 and "quantities must match the regular expression" in body["message"]
    bad = python_pod("x")
    bad["metadata"]["labels"] = {"ok": "not ok!"}
    assert causes(raw_request(fake_k8s, "POST", path, bad)[1]) == {("metadata.labels", "FieldValueInvalid")}
    bad = python_pod("x")
    bad["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "o"}]
    assert causes(raw_request(fake_k8s, "POST", path, bad)[1]) == {
        ("metadata.ownerReferences.uid", "FieldValueInvalid")
    }
    status, body = raw_request(fake_k8s, "POST", "/api/v1/namespaces/nope/pods", python_pod("x"))
    assert (status, body["message"]) == (404, 'namespaces "nope" not found')
    bad = python_pod("x")
    bad["spec"]["serviceAccountName"] = "robot"
    status, body = raw_request(fake_k8s, "POST", path, bad)
    assert status == 403 and body["message"].endswith('serviceaccount "robot" not found')
    assert raw_request(fake_k8s, "POST", path, python_pod("x"))[0] == 201
    status, body = raw_request(fake_k8s, "POST", path, python_pod("x"))
    assert (status, body["reason"], body["message"]) == (409, "AlreadyExists", 'pods "x" already exists')
    assert raw_request(fake_k8s, "PUT", path + "/x", python_pod("x"))[0] == 405
    assert raw_request(fake_k8s, "GET", "/api/v1/namespaces/default/widgets")[0] == 404
    assert raw_request(fake_k8s, "POST", path, b"not json")[0] == 400


def test_secret_validation(fake_k8s: FakeApiServer) -> None:
    path = "/api/v1/namespaces/default/secrets"
    status, body = raw_request(fake_k8s, "POST", path, {"metadata": {"name": "x"}, "data": {"k": "%%%"}})
    assert status == 400 and "illegal base64" in body["message"]
    status, body = raw_request(fake_k8s, "POST", path, {"metadata": {"name": "x"}, "stringData": {"a b": "v"}})
    assert status == 422 and causes(body) == {("data[a b]", "FieldValueInvalid")}
    immutable = {"metadata": {"name": "frozen"}, "immutable": True, "stringData": {"k": "v"}}
    assert raw_request(fake_k8s, "POST", path, immutable)[0] == 201
    patch = {"stringData": {"k": "w"}}
    status, body = raw_request(fake_k8s, "PATCH", path + "/frozen", patch, "application/merge-patch+json")
    assert status == 422 and causes(body) == {("data", "FieldValueForbidden")}


def test_patch(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    body = python_pod("p", "import time; time.sleep(60)")
    body["metadata"]["labels"] = {"a": "1", "b": "2"}
    k8s_core.create_namespaced_pod(NS, body)
    pod = k8s_core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"a": "10", "b": None, "c": "3"}}})
    assert pod.metadata.labels == {"a": "10", "c": "3"}
    pod = k8s_core.patch_namespaced_pod("p", NS, [{"op": "add", "path": "/metadata/labels/d", "value": "4"}])
    assert pod.metadata.labels == {"a": "10", "c": "3", "d": "4"}
    pod = k8s_core.patch_namespaced_pod(
        "p", NS, {"metadata": {"labels": {"e": "5"}}}, _content_type="application/merge-patch+json"
    )
    assert pod.metadata.labels["e"] == "5"
    with pytest.raises(ApiException) as err:
        k8s_core.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"bad": "x y"}}})
    assert err.value.status == 422
    with pytest.raises(ApiException) as err:
        k8s_core.patch_namespaced_pod("p", NS, {"spec": {"restartPolicy": "Always"}})
    assert err.value.status == 422 and "pod updates may not change fields" in json.loads(err.value.body)["message"]
    with pytest.raises(ApiException) as err:
        k8s_core.patch_namespaced_pod("p", NS, {"metadata": {"resourceVersion": "1", "labels": {"f": "6"}}})
    assert err.value.status == 409
    pod = k8s_core.patch_namespaced_pod("p", NS, {"status": {"phase": "Failed"}, "metadata": {"uid": "forged"}})
    assert pod.status.phase != "Failed" and pod.metadata.uid != "forged"
    with pytest.raises(ApiException) as err:
        k8s_core.patch_namespaced_pod("missing", NS, {"metadata": {"labels": {"a": "1"}}})
    assert err.value.status == 404
    k8s_core.delete_namespaced_pod("p", NS, grace_period_seconds=0)


def test_watch_from_a_compacted_resource_version_is_gone(fake_k8s: FakeApiServer, k8s_core: client.CoreV1Api) -> None:
    rv = k8s_core.list_namespaced_pod(NS).metadata.resource_version
    k8s_core.create_namespaced_pod(NS, python_pod("a"))
    fake_k8s.compact()
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(k8s_core.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=5):
            pass
    assert err.value.status == 410


def test_watches_end_and_the_client_resumes() -> None:
    """With ``max_watch_seconds`` every watch ends early; ``Watch`` resumes from its last resourceVersion."""
    with FakeApiServer(max_watch_seconds=0.3) as server, client.ApiClient(server.configuration()) as api_client:
        core = client.CoreV1Api(api_client)
        rv = core.list_namespaced_pod(NS).metadata.resource_version
        core.create_namespaced_pod(NS, python_pod("slow", "import time; time.sleep(1.5)"))
        phases = []
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, NS, resource_version=rv):  # bounded by the test timeout
            phases.append((ev["type"], ev["object"].status.phase))
            if phases[-1][1] == "Succeeded":
                w.stop()
    assert phases == [("ADDED", "Pending"), ("MODIFIED", "Pending"), ("MODIFIED", "Running"), ("MODIFIED", "Succeeded")]
    assert server.leftover_pids() == [] and server.internal_errors == []


def test_watch_selector_transitions(k8s_core: client.CoreV1Api) -> None:
    body = python_pod("moving", "import time; time.sleep(60)")
    body["metadata"]["labels"] = {"role": "worker"}
    created = k8s_core.create_namespaced_pod(NS, body)
    w = watch.Watch()
    types = []
    stream = w.stream(
        k8s_core.list_namespaced_pod,
        NS,
        label_selector="role=worker",
        resource_version=created.metadata.resource_version,
        timeout_seconds=20,
    )
    k8s_core.patch_namespaced_pod("moving", NS, {"metadata": {"labels": {"role": "idle"}}})
    for ev in stream:
        types.append(ev["type"])
        if ev["type"] == "DELETED":  # left the selector
            w.stop()
    assert types[-1] == "DELETED" and ev["object"].metadata.labels == {"role": "idle"}
    k8s_core.delete_namespaced_pod("moving", NS, grace_period_seconds=0)


def test_responses_only_use_fields_the_client_knows(k8s_client: client.ApiClient, k8s_core: client.CoreV1Api) -> None:
    k8s_core.create_namespaced_secret(NS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    k8s_core.create_namespaced_pod(
        NS, python_pod("p", env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    )
    wait_phase(k8s_core, "p", "Succeeded")
    calls = [
        (k8s_core.read_namespaced_pod, ("p", NS), "V1Pod"),
        (k8s_core.list_namespaced_pod, (NS,), "V1PodList"),
        (k8s_core.read_namespaced_secret, ("s", NS), "V1Secret"),
        (k8s_core.list_namespaced_event, (NS,), "CoreV1EventList"),
        (k8s_core.read_namespace, (NS,), "V1Namespace"),
        (k8s_core.list_namespaced_service_account, (NS,), "V1ServiceAccountList"),
        (k8s_core.get_api_resources, (), "V1APIResourceList"),
        (client.VersionApi(k8s_client).get_code, (), "VersionInfo"),
    ]
    for method, args, model in calls:
        data = json.loads(method(*args, _preload_content=False).data)
        dumped = k8s_client.sanitize_for_serialization(
            k8s_client.deserialize(json.dumps(data), model, "application/json")
        )
        assert unknown_keys(data, dumped) == [], model


def causes(status: dict[str, Any]) -> set[tuple[str, str]]:
    """(field, reason) of each cause of a ``Status``."""
    return {(c["field"], c["reason"]) for c in status["details"]["causes"]}


def unknown_keys(raw_obj: Any, model_dump: Any, path: str = "") -> list[str]:
    """Keys the server sent that the client model does not know (a typo in the fake, usually)."""
    if isinstance(raw_obj, dict):
        out = []
        for key, value in raw_obj.items():
            if value is None:
                continue
            if not isinstance(model_dump, dict) or key not in model_dump:
                out.append(f"{path}.{key}")
            else:
                out += unknown_keys(value, model_dump[key], f"{path}.{key}")
        return out
    if isinstance(raw_obj, list) and isinstance(model_dump, list):
        return [k for a, b in zip(raw_obj, model_dump, strict=True) for k in unknown_keys(a, b, path + "[]")]
    return []
