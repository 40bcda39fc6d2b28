"""The probe's answers become the right phase and message."""

from __future__ import annotations

import json
import sys

import pytest
from clustercore_ssh.errors import SSHLaunchError
from clustercore_ssh.probe import MARKER, parse_probe

from clustercore.plugin import versions as local_versions


def answer(**info: object) -> str:
    base = {"python": list(sys.version_info[:3]), "executable": "/py", "cpus": 4, "versions": list(local_versions())}
    base.update(info)
    return "motd line\n" + MARKER + json.dumps(base) + "\n"


def test_good_answer() -> None:
    result = parse_probe("h", "/py", 0, answer(), 10)
    assert result.cpus == 4 and result.versions == local_versions()


@pytest.mark.parametrize(
    ("status", "output", "phase", "message"),
    [
        (127, "sh: /py: not found\n", "python", "exit status 127 (not found"),
        (-1, "", "python", "did not answer within 10 s"),
        (0, answer(import_error="ModuleNotFoundError: No module named 'clustercore'"), "import", "No module named"),
        (0, answer(python=[3, 99, 0]), "version", "is Python 3.99 but the driver runs"),
        (0, answer(versions=[999, *sys.version_info[:2]]), "version", "clustercore protocol 999"),
    ],
)
def test_failures(status: int, output: str, phase: str, message: str) -> None:
    with pytest.raises(SSHLaunchError) as info:
        parse_probe("root@h", "/py", status, output, 10)
    assert info.value.phase == phase and info.value.host == "root@h"
    assert message in str(info.value)
    assert MARKER not in str(info.value)


def test_error_pickles() -> None:
    import pickle

    exc = SSHLaunchError("h", "auth", "no", "out")
    again = pickle.loads(pickle.dumps(exc))
    assert (again.host, again.phase, again.detail, again.output, str(again)) == ("h", "auth", "no", "out", str(exc))
