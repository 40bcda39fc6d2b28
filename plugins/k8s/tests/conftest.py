"""Fixtures around the Kubernetes API server the tests run against.

By default that is the in-repo fake (see ``fake_apiserver/README.md``); with
``CLUSTERCORE_K8S_TESTS=real`` (``make test-k8s``) it is the real control plane of
``tests/services/k8s`` (``real_apiserver.py``), and tests that need the fake itself are skipped.

- ``k8s_api``: the server under test, fake or real.
- ``fake_k8s``: a started ``FakeApiServer``; on teardown it is stopped and the test fails if
  any process it started is still alive or the fake hit an internal error.
- ``k8s_client`` / ``k8s_core``: ``kubernetes.client.ApiClient`` / ``CoreV1Api`` on ``k8s_api``.
- ``k8s_kubeconfig``: a kubeconfig file for it (``load_kube_config(config_file=...)``).
- ``k8s_incluster``: the environment of a pod (``KUBERNETES_SERVICE_HOST/PORT`` and the service
  account files) so that ``kubernetes.config.load_incluster_config()`` reaches it over https.

Watch-driven wait helpers live in ``fake_apiserver.clientside``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.config import incluster_config

if str(Path(__file__).parent) not in sys.path:  # also importable under --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).parent))
from fake_apiserver import FakeApiServer, InClusterFiles
from real_apiserver import RealApiServer, real_mode

from clustercore.testing import clean_cluster, ship_test_modules_by_value

__all__ = ["ship_test_modules_by_value"]  # a fixture: pytest finds it here

HOW_REAL = "run `bash tests/services/k8s up` as root (or `make test-k8s`)"
_real: list[RealApiServer] = []


def _real_server() -> RealApiServer:
    if not _real:
        import ccservices

        ccservices.load_env()
        kubeconfig = os.environ.get("CLUSTERCORE_K8S_KUBECONFIG")
        if not kubeconfig or not Path(kubeconfig).is_file():
            pytest.fail(f"CLUSTERCORE_K8S_TESTS=real but no control plane is running: {HOW_REAL}")
        _real.append(RealApiServer(kubeconfig))
    return _real[0]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not real_mode():
        return ["kubernetes: the in-repo fake API server (CLUSTERCORE_K8S_TESTS=real for the real one)"]
    try:
        server = _real_server()
    except BaseException as exc:  # noqa: BLE001 - pytest.fail raises an OutcomeException
        return [f"kubernetes: no real control plane ({exc})"]
    return [
        f"kubernetes: kube-apiserver {server.version()} at {server.url} (tests/services/k8s)",
        f"kubernetes: node {server.node_info()}",
    ]


@pytest.fixture
def k8s_api(request: pytest.FixtureRequest) -> Any:
    """The API server under test: the real one under ``CLUSTERCORE_K8S_TESTS=real``, else the fake."""
    if real_mode():
        if request.module.__name__.startswith("test_fake_apiserver"):
            # the fake's own tests: each expects a fresh server, and the fake models a newer one
            pytest.skip("tests the in-repo fake")
        return _real_server()
    return request.getfixturevalue("fake_k8s")


@pytest.fixture
def fake_k8s() -> Iterator[FakeApiServer]:
    """A running fake API server; checks for leaked processes and internal errors afterwards."""
    if real_mode():
        pytest.skip("needs the in-repo fake (it tests the fake, or uses a knob only the fake has)")
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()
    leftover = server.leftover_pids()
    assert not leftover, f"fake kubelet left processes behind: {leftover}"
    assert not server.internal_errors, f"fake-apiserver internal errors: {server.internal_errors}"


@pytest.fixture
def k8s_client(k8s_api: Any) -> Iterator[client.ApiClient]:
    """An ``ApiClient`` configured for ``k8s_api``."""
    with client.ApiClient(k8s_api.configuration()) as api_client:
        yield api_client


@pytest.fixture
def k8s_core(k8s_client: client.ApiClient) -> client.CoreV1Api:
    """``CoreV1Api`` on ``k8s_client``."""
    return client.CoreV1Api(k8s_client)


@pytest.fixture
def k8s_kubeconfig(k8s_api: Any, tmp_path: Path) -> Path:
    """Path of a kubeconfig for ``k8s_api`` (namespace ``default``)."""
    return k8s_api.write_kubeconfig(tmp_path / "kubeconfig")  # type: ignore[no-any-return]


@pytest.fixture
def k8s_incluster(k8s_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InClusterFiles:
    """Make this process look like it runs in a pod of ``k8s_api`` (https, service-account token)."""
    files: InClusterFiles = k8s_api.write_incluster_files(tmp_path / "serviceaccount")
    for key, value in files.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(files.token_file))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(files.ca_file))
    return files


# --- fixtures of the plugin's own tests (clustercore_k8s) -----------------------------------------


@pytest.fixture
def k8s_clean(k8s_api: Any, k8s_core: client.CoreV1Api) -> Iterator[None]:
    """No workers before; afterwards every worker is removed and no pod or Secret of the plugin is left."""
    from k8s_testing import wait_none_left

    with clean_cluster(60, check_processes=False):  # the pods' processes: fake_k8s checks those
        yield
    assert wait_none_left(k8s_core) == ([], [])
    from clustercore_k8s import session

    assert not session._open, "a cluster's session (watch, API connection) is still open"


@pytest.fixture
def outside(k8s_clean: None, k8s_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The driver runs outside the cluster: a kubeconfig in ``KUBECONFIG``, no pod environment."""
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(k8s_kubeconfig))
    return k8s_kubeconfig


@pytest.fixture
def inside(
    k8s_clean: None, k8s_incluster: InClusterFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> InClusterFiles:
    """The driver runs in a pod (service account, no kubeconfig), but not in one the server knows."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    return k8s_incluster
