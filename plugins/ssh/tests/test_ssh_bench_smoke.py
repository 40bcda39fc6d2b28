"""``python -m bench.ssh_startup --quick`` runs against the real servers and prints its ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ssh_testing import SSHInfra, TestHosts

pytestmark = [pytest.mark.sshd, pytest.mark.hosts, pytest.mark.timeout(150)]
REPO = Path(__file__).resolve().parents[3]


def test_quick_bench(ssh_infra: SSHInfra, test_hosts: TestHosts, tmp_path: Path) -> None:
    if not (REPO / "bench" / "ssh_startup.py").is_file():
        pytest.skip("bench/ is not in this checkout")
    out = tmp_path / "ssh.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ssh_startup", "--quick", "--json", str(out)],
        cwd=REPO,
        env={**os.environ, "CLUSTERCORE_SSH_CONFIG": ssh_infra.config},
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for title in ("8 workers on one host", "3 hosts x 4 workers"):
        assert f"== start-up over SSH: {title}" in proc.stdout, proc.stdout
    results = json.loads(out.read_text())
    assert all(results[t]["clustercore-ssh"][0] > 0 for t in results)
