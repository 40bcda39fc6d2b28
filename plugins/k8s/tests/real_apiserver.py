"""The real cluster of ``tests/services/k8s`` as the plugin's tests see it.

``make test-k8s`` sets ``CLUSTERCORE_K8S_TESTS=real``; the fixtures then hand the tests a
:class:`RealApiServer` where they would otherwise start the in-repo fake. It offers the part
of the fake's interface that has a real counterpart: a client configuration (the admin's
client certificate), kubeconfigs, in-cluster files (a service account's token, bound to the
Role the README documents), raw requests, the pids of the processes the kubelet runs for pods
(the pods' cgroups), and whether a pod's container still runs. What only the fake can do
(evict a pod, end every watch after 0.3 s, compact on demand) stays with tests that ask for
``fake_k8s``, which are skipped here.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

import yaml
from fake_apiserver import InClusterFiles
from fake_apiserver.clientside import exchange
from kubernetes import client
from kubernetes.client.exceptions import ApiException

MODE_VAR = "CLUSTERCORE_K8S_TESTS"
CGROUPS = Path("/sys/fs/cgroup/pids/clustercore-k8s")  # the kubelet's --cgroup-root
DRIVER_ACCOUNT = "cc-driver"
README = Path(__file__).resolve().parents[1] / "README.md"
RBAC_HEADING = "## RBAC: the minimal Role for the driver"


def real_mode() -> bool:
    return os.environ.get(MODE_VAR, "") == "real"


def documented_role() -> dict[str, Any]:
    """The Role in the README's RBAC section (its first YAML block), as the users get it."""
    text = README.read_text().split(RBAC_HEADING, 1)[1]
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    role: dict[str, Any] = yaml.safe_load(block)
    assert role["kind"] == "Role", role
    return role


class RealApiServer:
    """The kube-apiserver of ``tests/services/k8s``, reached as its admin."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = Path(kubeconfig)
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.url: str = cluster["server"]
        self.ca_file = Path(cluster["certificate-authority"])
        self.cert_file, self.key_file = user["client-certificate"], user["client-key"]
        self.host, _, port = self.url.removeprefix("https://").rpartition(":")
        self.port = int(port)

    # -- what the fixtures use ------------------------------------------------------------------
    def configuration(self) -> client.Configuration:
        config = client.Configuration(host=self.url)
        config.ssl_ca_cert = str(self.ca_file)
        config.cert_file, config.key_file = self.cert_file, self.key_file
        return config

    def version(self) -> str:
        status, body = self.raw_request("GET", "/version")
        return str(body["gitVersion"]) if status == 200 else f"unknown ({status})"

    def node_info(self) -> str:
        """Each node's name, kubelet and container runtime, as the node reports them."""
        status, body = self.raw_request("GET", "/api/v1/nodes")
        if status != 200:
            return f"unknown ({status})"
        nodes = [
            f"{n['metadata']['name']} (kubelet {i.get('kubeletVersion')}, runtime {i.get('containerRuntimeVersion')})"
            for n in body["items"]
            for i in [n["status"].get("nodeInfo") or {}]
        ]
        return ", ".join(nodes) or "none"

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(json.dumps(config, indent=2))
        return path

    def write_incluster_files(self, directory: Path, namespace: str = "default") -> InClusterFiles:
        """The token of ServiceAccount ``cc-driver``, bound to the README's minimal Role."""
        token = self.driver_token(namespace)
        directory.mkdir(parents=True, exist_ok=True)
        token_file, ca, ns = directory / "token", directory / "ca.crt", directory / "namespace"
        token_file.write_text(token)
        ca.write_bytes(self.ca_file.read_bytes())
        ns.write_text(namespace)
        env = {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}
        return InClusterFiles(directory, token_file, ca, ns, env)

    def driver_token(self, namespace: str = "default") -> str:
        """ServiceAccount ``cc-driver`` bound to the README's Role in ``namespace`` (idempotent); its token."""
        role = documented_role()
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": DRIVER_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": DRIVER_ACCOUNT, "namespace": namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
        }
        with client.ApiClient(self.configuration()) as api:
            core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
            for create, body in (
                (core.create_namespaced_service_account, {"metadata": {"name": DRIVER_ACCOUNT}}),
                (rbac.create_namespaced_role, role),
                (rbac.create_namespaced_role_binding, binding),
            ):
                try:
                    create(namespace, body)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the token controller fills in the Secret
                account = core.read_namespaced_service_account(DRIVER_ACCOUNT, namespace)
                for ref in account.secrets or []:
                    secret = core.read_namespaced_secret(ref.name, namespace)
                    if secret.data and secret.data.get("token"):
                        return base64.b64decode(secret.data["token"]).decode()
                time.sleep(0.2)
        raise AssertionError(f"ServiceAccount {namespace}/{DRIVER_ACCOUNT} got no token in 30 s")

    def raw_request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json", token: str | None = None
    ) -> tuple[int, Any]:
        """One request with no client-side model in the way: (status, parsed JSON or bytes)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if token is None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=10)
        return exchange(conn, method, path, body, ctype, token)

    @property
    def started_pids(self) -> list[int]:
        """The processes the kubelet runs for pods now (every container's cgroup, sandboxes too)."""
        pids: list[int] = []
        for procs in CGROUPS.rglob("cgroup.procs"):
            try:
                pids += [int(p) for p in procs.read_text().split()]
            except (OSError, ValueError):
                continue
        return pids

    def container_pids(self, pod: str, namespace: str = "default") -> list[int]:
        """The host's pids of the processes in pod ``pod``'s containers (not its sandbox)."""
        status, body = self.raw_request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
        assert status == 200, (status, body)
        ids = {c["containerID"].rpartition("/")[2] for c in body["status"].get("containerStatuses") or []}
        pids: list[int] = []
        for procs in CGROUPS.rglob("cgroup.procs"):
            if procs.parent.name in ids:
                pids += [int(p) for p in procs.read_text().split()]
        return pids

    def container_running(self, pod: str, namespace: str = "default") -> bool:
        """Whether pod ``pod`` exists and a container of it runs (the kubelet's last word)."""
        status, body = self.raw_request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if status == 404:
            return False
        assert status == 200, (status, body)
        return any("running" in c.get("state", {}) for c in body["status"].get("containerStatuses") or [])
