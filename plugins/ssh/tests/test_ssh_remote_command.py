"""The remote shell line: quoting, env, dir, the pid report; the cookie is never in it."""

from __future__ import annotations

import subprocess

import pytest
from clustercore_ssh.remote_command import parse_pid_line, shell_command


def run_sh(line: str) -> str:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True, timeout=10).stdout


def test_posix_line_runs_in_dir_with_env_and_reports_the_exec_pid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    odd = 'it\'s $HOME; `x` "q" \\ *'
    line = shell_command(
        ["sh", "-c", 'echo "$$|$(pwd)|$A|$B"'],
        env={"A": odd, "B": ""},
        dir=str(tmp_path),
        report_pid=True,
    )
    first, second = run_sh(line).splitlines()
    pid = parse_pid_line(first)
    shown_pid, cwd, a, b = second.split("|")
    assert pid == int(shown_pid)  # exec kept the pid the shell reported
    assert (cwd, a, b) == (str(tmp_path), odd, "")


def test_csh_line_wraps_in_sh() -> None:
    line = shell_command(["echo", "a b"], env={"X": "1"}, shell="csh")
    assert line.startswith("exec /bin/sh -c ")
    assert run_sh(line) == "a b\n"


def test_no_dir_no_cd() -> None:
    assert shell_command(["true"]) == "exec true"


@pytest.mark.parametrize("name", ["1X", "A-B", "A B", "", "X=Y"])
def test_bad_env_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        shell_command(["true"], env={name: "1"})


def test_bad_shell() -> None:
    with pytest.raises(ValueError, match="shell must be one of posix, csh"):
        shell_command(["true"], shell="wincmd")


def test_newline_through_csh_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        shell_command(["true"], env={"X": "a\nb"}, shell="csh")


@pytest.mark.parametrize(
    ("line", "pid"), [("clustercore_ssh_pid:123\n", 123), ("clustercore_ssh_pid:x", None), ("hi", None)]
)
def test_parse_pid_line(line: str, pid: int | None) -> None:
    assert parse_pid_line(line) == pid


def test_dir_if_exists_falls_back_to_where_the_shell_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    line = shell_command(["pwd"], dir=str(tmp_path / "missing"), dir_if_exists=True)
    assert run_sh(f"cd {tmp_path} && {line}") == f"{tmp_path}\n"
    line = shell_command(["pwd"], dir=str(tmp_path), dir_if_exists=True)
    assert run_sh(f"cd / && {line}") == f"{tmp_path}\n"
    with pytest.raises(subprocess.CalledProcessError):
        run_sh(shell_command(["pwd"], dir=str(tmp_path / "missing")))
