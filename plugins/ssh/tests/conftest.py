"""Fixtures: the real SSH servers (started with ``shared/infra``), clean clusters, leak checks.

Tests marked ``sshd`` need the loopback sshd (``sshd-up``), tests marked
``hosts`` the network-namespace hosts (``hosts-up 3``). The session fixtures
start them with the infra scripts (found at ``$CLUSTERCORE_SHARED_INFRA``,
else ``../shared/infra`` next to the repository), or use what ``.ci/run``
started and exported. When they are missing the tests are skipped, except
under ``CI=...``, where missing infrastructure is a failure. The services are
left running (``.ci/run`` stops them): other test sessions may share them.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import ssh_testing
from ssh_testing import NUM_HOSTS, Launched, SSHInfra, TestHosts

REPO = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sshd: needs the loopback sshd from shared/infra/sshd-up")
    config.addinivalue_line("markers", "hosts: needs the namespace hosts from shared/infra/hosts-up 3")


@pytest.fixture(autouse=True)
def _ship_test_modules_by_value(request: pytest.FixtureRequest) -> None:
    """Workers cannot import test modules: send their functions by value, as for ``__main__``."""
    for module in (request.module, ssh_testing):
        if module.__name__ not in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.register_pickle_by_value(module)


def _infra_dir() -> Path | None:
    for candidate in (os.environ.get("CLUSTERCORE_SHARED_INFRA"), REPO.parent / "shared" / "infra"):
        if candidate and (Path(candidate) / "sshd-up").is_file():
            return Path(candidate)
    return None


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set: missing infrastructure is a failure)", pytrace=False)
    pytest.skip(what)


def _run_infra(script: str, *args: str) -> None:
    """Run an infra script if we have it and may; its ``export`` lines go into os.environ."""
    infra = _infra_dir()
    if infra is None or os.geteuid() != 0:
        return
    proc = subprocess.run(
        ["bash", str(infra / script), *args], capture_output=True, text=True, timeout=900, check=False
    )
    if proc.returncode != 0:
        _missing(f"{script} {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            os.environ[name] = " ".join(shlex.split(value))


@pytest.fixture(scope="session")
def ssh_infra() -> SSHInfra:
    _run_infra("sshd-up")
    env = os.environ
    if not env.get("CLUSTERCORE_SSH_CONFIG") or not Path(env["CLUSTERCORE_SSH_CONFIG"]).is_file():
        _missing("no sshd: run shared/infra/sshd-up as root (or export CLUSTERCORE_SSH_* as it prints)")
    return SSHInfra(
        config=env["CLUSTERCORE_SSH_CONFIG"],
        key=env["CLUSTERCORE_SSH_KEY"],
        known_hosts=env["CLUSTERCORE_SSH_KNOWN_HOSTS"],
        alias=env.get("CLUSTERCORE_SSH_ALIAS", "cc-local"),
        host=env.get("CLUSTERCORE_SSH_HOST", "127.0.0.1"),
        port=int(env.get("CLUSTERCORE_SSH_PORT", "2222")),
        user=env.get("CLUSTERCORE_SSH_USER", "root"),
    )


@pytest.fixture(scope="session")
def test_hosts(ssh_infra: SSHInfra) -> TestHosts:
    _run_infra("hosts-up", str(NUM_HOSTS))
    names = os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()
    addresses = os.environ.get("CLUSTERCORE_TEST_HOSTS", "").split()
    if len(names) < NUM_HOSTS or len(addresses) < NUM_HOSTS:
        _missing(f"need {NUM_HOSTS} namespace hosts (shared/infra/hosts-up {NUM_HOSTS}); have {names}")
    controller = os.environ["CLUSTERCORE_TEST_CONTROLLER_ADDR"]
    return TestHosts(tuple(names[:NUM_HOSTS]), tuple(addresses[:NUM_HOSTS]), controller)


@pytest.fixture
def cluster(ssh_infra: SSHInfra) -> Iterator[Launched]:
    """No workers before and after the test; fails if a recorded remote process survives it."""
    import clustercore as cc

    assert cc.procs() == [1], f"workers left over by an earlier test: {cc.procs()}"
    alias_of = {socket.gethostname(): ssh_infra.alias}
    alias_of.update({name: name for name in os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()})
    launched = Launched(ssh_infra, alias_of)
    try:
        yield launched
    finally:
        left = [p for p in cc.procs() if p != 1]
        if left:
            cc.rmprocs(left, waitfor=30)
    assert launched.leftovers() == {}, "remote worker processes survived the test"
