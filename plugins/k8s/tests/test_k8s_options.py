"""Bad K8sManager values fail at the call site, before any request reaches the API server;
``import clustercore`` (and loading the plugin's hooks) does not import ``kubernetes``."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from clustercore_k8s import K8sManager
from clustercore_k8s.options import parse_quantity
from k8s_testing import IMAGE, plugin_objects
from kubernetes import client

import clustercore as cc

pytestmark = pytest.mark.timeout(60)

BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"n": 0}, ValueError, "n must be at least 1"),
    ({"n": True}, TypeError, "n must be an int"),
    ({"n": 2, "cpu": "lots"}, ValueError, "cpu must be a Kubernetes quantity"),
    ({"n": 2, "memory": "4GB"}, ValueError, "gibibytes as 'Gi'"),
    ({"n": 2, "memory": ("2Gi", "1Gi")}, ValueError, "the request 2Gi is larger than the limit 1Gi"),
    ({"n": 2, "cpu": -1}, ValueError, "cpu must be"),
    ({"n": 2, "namespace": "Team_A"}, ValueError, "namespace must be an RFC 1123 label"),
    ({"n": 2, "labels": {"clustercore.io/cluster": "x"}}, ValueError, "belong to clustercore"),
    ({"n": 2, "labels": {"bad key!": "v"}}, ValueError, "not a valid label key"),
    ({"n": 2, "labels": {"team": "a b"}}, ValueError, "not a valid label value"),
    ({"n": 2, "env": {"CLUSTERCORE_COOKIE": "x"}}, ValueError, "set by clustercore"),
    ({"n": 2, "env": {"1=BAD": "x"}}, ValueError, "not a valid environment variable name"),
    ({"n": 2, "env": ["A=1"]}, TypeError, "env must be a dict"),
    ({"n": 2, "node_selector": {"gpu": 1}}, TypeError, "node_selector"),
    ({"n": 2, "tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, ValueError, "must be empty"),
    ({"n": 2, "tolerations": [{"key": "a", "toleration_seconds": 5}]}, ValueError, "use camelCase"),
    ({"n": 2, "tolerations": "spot"}, TypeError, "tolerations must be a list"),
    ({"n": 2, "image_pull_policy": "Sometimes"}, ValueError, "image_pull_policy must be one of"),
    ({"n": 2, "service_account": "Robot"}, ValueError, "service_account must be an RFC 1123 subdomain"),
    ({"n": 2, "pending_timeout": -1}, ValueError, "pending_timeout must be a positive"),
    ({"n": 2, "min_workers": 3}, ValueError, "min_workers (3) cannot be more than n (2)"),
    ({"n": 2, "transport": "ssh"}, ValueError, "transport must be one of"),
    ({"n": 2, "configure": "add-gpus"}, TypeError, "configure must be a callable"),
    ({"n": 2, "pod_template": ["not", "a", "pod"]}, TypeError, "pod_template must be a dict"),
    ({"n": 2, "pod_template": {"spec": {"containers": {"name": "x"}}}}, TypeError, "must be a list of dicts"),
    ({"n": 2, "image": "two words"}, ValueError, "image must not contain whitespace"),
]


@pytest.fixture
def no_api_calls(outside: object) -> Iterator[list[str]]:
    """Every HTTP request the client would make is recorded and refused (until the test ends)."""
    made: list[str] = []

    def refuse(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        made.append(f"{method} {url}")
        raise AssertionError(f"an API request was made: {method} {url}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client.rest.RESTClientObject, "request", refuse)
        yield made


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_values_fail_before_any_api_call(
    no_api_calls: list[str], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        cc.addprocs("k8s", **{"image": IMAGE, **kwargs})
    assert no_api_calls == [] and cc.procs() == [1]


def test_image_is_required_outside_a_cluster(no_api_calls: list[str]) -> None:
    with pytest.raises(ValueError, match=r"needs image=.*the driver does not run in a pod"):
        cc.addprocs("k8s", n=2)
    with pytest.raises(TypeError, match="unexpected keyword arguments: nodez"):
        cc.addprocs("k8s", n=2, image=IMAGE, nodez=2)
    assert no_api_calls == []


def test_a_template_image_is_enough(no_api_calls: list[str]) -> None:
    manager = K8sManager(1, pod_template={"spec": {"containers": [{"name": "worker", "image": "repo/img:1"}]}})
    assert manager.image is None


def test_configure_breaking_the_pod_fails_before_anything_is_created(
    outside: object, k8s_core: client.CoreV1Api
) -> None:
    def drop_labels(pod: dict[str, Any]) -> dict[str, Any]:
        pod["metadata"]["labels"] = {}
        return pod

    with pytest.raises(ValueError, match=re.escape("configure(pod) must keep the labels")):
        cc.addprocs("k8s", n=1, image=IMAGE, configure=drop_labels)
    assert plugin_objects(k8s_core)[0] == [] and plugin_objects(k8s_core, "secret")[0] == []


def test_values_are_normalised() -> None:
    m = K8sManager(
        2,
        image=IMAGE,
        cpu=0.5,
        memory=("1Gi", None),
        env={"N": 3},
        tolerations=[client.V1Toleration(key="spot", operator="Exists", toleration_seconds=30)],
    )
    assert (m.cpu.request, m.cpu.limit) == ("0.5", "0.5")  # type: ignore[union-attr]
    assert (m.memory.request, m.memory.limit) == ("1Gi", None)  # type: ignore[union-attr]
    assert m.env == {"N": "3"}
    assert m.tolerations == [{"key": "spot", "operator": "Exists", "tolerationSeconds": 30}]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5Gi", Decimal(1.5 * 2**30)),
        ("1e3", Decimal(1000)),
        ("128Mi", Decimal(128 * 2**20)),
        ("1k", Decimal(1000)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_import_clustercore_does_not_import_kubernetes() -> None:
    code = (
        "import sys, clustercore\n"
        "from clustercore.testing import manager_types, cli_commands\n"
        "assert 'k8s' in manager_types() and 'k8s' in cli_commands()\n"
        "import clustercore_k8s\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
