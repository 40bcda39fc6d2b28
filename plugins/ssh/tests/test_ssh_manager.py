"""SSHManager validates everything before any I/O; the plugin registers and loads lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest
from clustercore_ssh import SSHManager
from clustercore_ssh.connection import HostConnection

import clustercore as cc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(HostConnection, "connect", refuse)
    monkeypatch.setattr(HostConnection, "_open_socket", refuse)


def test_defaults() -> None:
    m = SSHManager(machines=["h"])
    assert (m.tunnel, m.max_parallel, m.shell, m.flags.words) == (False, 10, "posix", ())
    assert [s.host for s in m.specs] == ["h"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"machines": ["h:x"]}, ValueError, "invalid machine spec 'h:x'"),
        ({"machines": "h"}, TypeError, "machines must be a list"),
        ({"machines": ["h"], "max_parallel": 0}, ValueError, "max_parallel must be a positive int"),
        ({"machines": ["h"], "max_parallel": True}, ValueError, "max_parallel must be a positive int"),
        ({"machines": ["h"], "tunnel": "yes"}, TypeError, "tunnel must be True or False"),
        ({"machines": ["h"], "shell": "fish"}, ValueError, "shell must be one of"),
        ({"machines": ["h"], "sshflags": "-L 1:h:2"}, ValueError, "'-L' is not supported"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, error: type, message: str, no_network: None) -> None:
    with pytest.raises(error, match=message):
        SSHManager(**kwargs)


def test_addprocs_rejects_bad_specs_before_connecting(no_network: None) -> None:
    with pytest.raises(ValueError, match="invalid machine spec 'host:99999'"):
        cc.addprocs(["host:99999"])
    with pytest.raises(TypeError, match="multiplex"):
        cc.addprocs(["host"], multiplex=True)


def test_bad_env_name_fails_before_connecting(no_network: None) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name 'A-B'"):
        cc.addprocs(["host"], env={"A-B": "1"})


def test_registered_under_ssh() -> None:
    from clustercore.testing import installed_plugins, manager_types

    assert manager_types()["ssh"] is SSHManager
    assert any(info.name == "ssh" and info.distribution == "clustercore-ssh" for info in installed_plugins())


def test_hooks_answer_only_for_ssh_managers() -> None:
    from clustercore_ssh import hooks

    from clustercore.plugin import ClusterManager, WorkerConfig

    other = ClusterManager()
    assert hooks.launch(other, {}, [], None) is None  # type: ignore[arg-type]
    assert hooks.connect(other, 2, WorkerConfig()) is None
    assert hooks.manage(other, 2, WorkerConfig(), "register") is None
    assert hooks.kill(other, 2, WorkerConfig()) is None


def test_importing_the_hooks_does_not_import_paramiko() -> None:
    code = "import clustercore_ssh.hooks, sys; assert 'paramiko' not in sys.modules, 'paramiko imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
