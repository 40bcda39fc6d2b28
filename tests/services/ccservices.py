"""The test services of ``make services`` (the scripts beside this file), as the tests see them.

``make services`` (as root) starts a loopback sshd, three network-namespace hosts and a Slurm
cluster and writes their variables as ``export NAME=value`` lines to ``$STATE/env``
(``$CLUSTERCORE_SERVICES_DIR``, default ``/tmp/clustercore-services``). :func:`load_env` reads
that file into ``os.environ`` so that a plain ``python -m pytest`` finds the services; a
variable already set in the environment wins. The fixtures decide what a missing service
means (a skip, or a failure under ``CI``); :data:`HOW` is the one command that provides it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
STATE = Path(os.environ.get("CLUSTERCORE_SERVICES_DIR", "/tmp/clustercore-services"))
HOW = "run `make services` as root"


class ServiceError(RuntimeError):
    """A service script failed; the message carries its output."""


def parse_exports(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of ``text`` (shell quoting undone); other lines are ignored."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        words = shlex.split(line)
        if len(words) == 2 and "=" in words[1]:
            name, _, value = words[1].partition("=")
            found[name] = value
    return found


def load_env() -> dict[str, str]:
    """Put the running services' variables into ``os.environ`` where unset; return them all."""
    try:
        found = parse_exports((STATE / "env").read_text())
    except FileNotFoundError:
        return {}
    for name, value in found.items():
        os.environ.setdefault(name, value)
    return found


def is_running(service: str) -> bool:
    """``"slurm"``, ``"hosts"`` or ``"sshd-local"``: started by these scripts and not stopped since."""
    return (STATE / service / "env").is_file()


def run(script: str, *args: str, timeout: float = 600) -> dict[str, str]:
    """Run ``tests/services/SCRIPT ARGS`` (as root); its ``export`` lines, also put in ``os.environ``."""
    argv = ["bash", str(SCRIPTS / script), *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise ServiceError(f"{' '.join(argv)} did not finish within {timeout:g} s") from e
    if proc.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr[-3000:]}")
    found = parse_exports(proc.stdout)
    os.environ.update(found)
    return found
