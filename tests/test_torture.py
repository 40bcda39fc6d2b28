"""The short run of the concurrency torture test (:mod:`tests.torture`) in the suite.

It runs in its own process, so that a hang there dumps every process's stacks
and fails this test instead of the suite. ``CLUSTERCORE_TORTURE_SEED`` replays
a run; ``make torture`` is the long run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECONDS = 75  # rounds start until then; each is bounded by tests.torture.ROUND_DEADLINE


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)
def test_short_torture_run() -> None:
    seed = os.environ.get("CLUSTERCORE_TORTURE_SEED")
    command = [sys.executable, "-m", "tests.torture", "--seconds", str(SECONDS)]
    if seed:
        command += ["--seed", seed]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 200, check=False)
    report = [line for line in run.stdout.splitlines() if line.startswith("[torture]")]
    print("\n".join(report))
    ours = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("From worker"))
    assert run.returncode == 0, f"{ours[-20000:]}\n{run.stderr[-5000:]}"
    assert report and report[-1].startswith("[torture] passed"), run.stdout[-5000:]
