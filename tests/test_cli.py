"""The ``clustercore`` command runs a program as ``python`` would, with workers added.

Each test runs the real command in a subprocess, from a directory other than the
program's, next to a ``helper`` module the program imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HELPER = "def square(x):\n    return x * x\n"

# Imports helper from next to itself, on the driver and (by reference) on the workers.
PROGRAM = """
import os, sys
import helper
import clustercore as cc
print(sys.path[0] == os.path.dirname(os.path.realpath(helper.__file__)), sys.argv[1:])
print(cc.nworkers(), cc.pmap(helper.square, range(4)))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "project" / "helper.py").write_text(HELPER)
    (tmp_path / "project" / "main.py").write_text(textwrap.dedent(PROGRAM))
    return tmp_path / "project"


def _clustercore(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clustercore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_a_script_imports_what_is_next_to_it_and_so_do_the_workers(project: Path) -> None:
    result = _clustercore("-p", "2", str(project / "main.py"), "a", "-p", "3", cwd=project.parent / "elsewhere")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True ['a', '-p', '3']", "2 [0, 1, 4, 9]"]


def test_a_script_reached_through_a_symbolic_link_has_its_own_directory_first(project: Path) -> None:
    link = project.parent / "elsewhere" / "linked.py"
    link.symlink_to(project / "main.py")
    result = _clustercore("-p", "1", str(link), cwd=project.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "True []"


def test_dash_c_runs_code_with_the_current_directory_on_the_path(project: Path) -> None:
    code = "import sys, helper, clustercore as cc; print(sys.argv, cc.remotecall_fetch(helper.square, 2, 5))"
    result = _clustercore("-p", "1", "-c", code, "x", "-m", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['-c', 'x', '-m'] 25"


def test_dash_m_runs_a_module_as_main(project: Path) -> None:
    result = _clustercore("-p", "2", "-m", "main", "b", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True ['b']", "2 [0, 1, 4, 9]"]


# With a bad CLUSTERCORE_WORKER_TIMEOUT, adding workers fails: so an error about the
# program itself shows it was checked before any worker was started.
NO_WORKERS = {"CLUSTERCORE_WORKER_TIMEOUT": "not a number"}


def test_a_missing_script_is_an_error_before_any_worker_starts(project: Path) -> None:
    result = _clustercore("-p", "2", "missing.py", cwd=project, env=NO_WORKERS)
    assert result.returncode == 2
    assert "can't open file" in result.stderr and "missing.py" in result.stderr
    assert "CLUSTERCORE_WORKER_TIMEOUT" not in result.stderr


def test_a_missing_module_is_an_error_before_any_worker_starts(project: Path) -> None:
    result = _clustercore("-p", "2", "-m", "no_such_module", cwd=project, env=NO_WORKERS)
    assert result.returncode == 1
    assert "No module named no_such_module" in result.stderr
    assert "CLUSTERCORE_WORKER_TIMEOUT" not in result.stderr


def test_the_program_exit_status_and_errors_are_its_own(project: Path) -> None:
    assert _clustercore("-c", "raise SystemExit(3)", cwd=project).returncode == 3
    failed = _clustercore("-p", "1", "-c", "1 / 0", cwd=project)
    assert failed.returncode == 1 and "ZeroDivisionError" in failed.stderr
    assert _clustercore("-p", "2", cwd=project).returncode == 2  # nothing to run
