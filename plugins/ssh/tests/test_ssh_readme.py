"""The README's two-host example runs, on the namespace hosts instead of node1/node2."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from ssh_testing import Launched, SSHInfra, TestHosts

pytestmark = [pytest.mark.sshd, pytest.mark.hosts, pytest.mark.timeout(90)]
README = Path(__file__).resolve().parents[1] / "README.md"


def test_two_host_example(
    cluster: Launched, ssh_infra: SSHInfra, test_hosts: TestHosts, capsys: pytest.CaptureFixture[str]
) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    a, b = test_hosts.aliases[:2]
    source = code.group(1)
    for old, new in {
        '"alice@node1"': repr(a),
        '"node2:2222"': repr(b),
        '("-i", "~/.ssh/cluster_key")': repr(ssh_infra.flags),
        '"/opt/venv/bin/python"': repr(sys.executable),
    }.items():
        assert old in source, f"the README example changed: {old} is gone"
        source = source.replace(old, new)
    exec(compile(source, str(README), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert out.count(f"'{a}'") == 1 and out.count(f"'{b}'") == 4, out
    assert out.strip().splitlines()[-1] in (a, b)  # a worker-to-worker call answered
