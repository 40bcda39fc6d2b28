"""Fixtures: the real SSH servers of ``make services``, clean clusters, leak checks.

Tests marked ``sshd`` need the loopback sshd, tests marked ``hosts`` the three
network-namespace hosts. ``make services`` (as root; ``make test`` runs it
first) starts both and writes their variables to
``/tmp/clustercore-services/env``, which the fixtures read (variables already
exported win). The fixtures neither start nor stop services. When one is
missing, its tests are skipped with the service's name and the command that
starts it, except under ``CI=...``, where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import ccservices
import pytest
import ssh_testing
from ssh_testing import NUM_HOSTS, Launched, SSHInfra, TestHosts

from clustercore.testing import clean_cluster, service_missing, ship_by_value, ship_test_modules_by_value

__all__ = ["ship_test_modules_by_value"]  # a fixture: pytest finds it here
ship_by_value(ssh_testing)  # its helpers run on the workers too


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sshd: needs the loopback sshd of `make services`")
    config.addinivalue_line("markers", "hosts: needs the namespace hosts of `make services`")


@pytest.fixture(scope="session")
def ssh_infra() -> SSHInfra:
    ccservices.load_env()
    env = os.environ
    if not os.path.isfile(env.get("CLUSTERCORE_SSH_CONFIG", "")):
        service_missing(f"the loopback sshd (127.0.0.1:2222) is not running: {ccservices.HOW}")
    if not os.access(env.get("CLUSTERCORE_SSH_KEY", ""), os.R_OK):
        service_missing(
            f"the sshd's client key {env.get('CLUSTERCORE_SSH_KEY')} is not readable here: run the tests as root"
        )
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
    ccservices.load_env()
    names = os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()
    addresses = os.environ.get("CLUSTERCORE_TEST_HOSTS", "").split()
    if len(names) < NUM_HOSTS or len(addresses) < NUM_HOSTS:
        service_missing(
            f"the {NUM_HOSTS} network-namespace hosts (ccnode1..{NUM_HOSTS}) are not running: {ccservices.HOW}"
        )
    controller = os.environ["CLUSTERCORE_TEST_CONTROLLER_ADDR"]
    return TestHosts(tuple(names[:NUM_HOSTS]), tuple(addresses[:NUM_HOSTS]), controller)


@pytest.fixture
def cluster(ssh_infra: SSHInfra) -> Iterator[Launched]:
    """No workers before and after the test; fails if a process one of its workers ran as, or
    one it recorded, survives it (checked on its host, over ssh)."""
    alias_of = {socket.gethostname(): ssh_infra.alias}
    alias_of.update({name: name for name in os.environ.get("CLUSTERCORE_TEST_HOSTNAMES", "").split()})
    launched = Launched(ssh_infra, alias_of)
    with clean_cluster(30, check_processes=False) as joined:
        yield launched
    for w in joined:
        launched.add(alias_of.get(w.hostname, ssh_infra.alias), w.ospid)
    assert launched.leftovers() == {}, "remote worker processes survived the test"
