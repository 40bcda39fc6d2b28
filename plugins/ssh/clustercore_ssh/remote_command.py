"""The command line sent to the remote shell: ``cd``, ``export``, report the pid, ``exec`` Python.

For ``shell="posix"`` (sh, bash, dash, zsh, ksh) a worker is started with::

    cd -- DIR && export VAR='value' && echo clustercore_ssh_pid:$$ && exec PYTHON -m clustercore worker ...

``DIR`` is ``dir`` if given (it must exist; a leading ``~`` or ``~user`` is
expanded there, as a shell would; if ``cd`` fails the line prints the shell's
error and ``clustercore_ssh_no_dir`` and exits, reported as phase ``dir``), else
the driver's current directory if it exists on that host (Julia's default;
shared file systems), else the login directory.

so the process whose pid the shell reports *is* the worker (``exec`` keeps the
pid). For ``shell="csh"`` (csh, tcsh) the same line runs under ``/bin/sh -c``.
The cluster cookie is not in it: it goes to the worker's stdin.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

PID_MARKER = "clustercore_ssh_pid:"
DIR_MARKER = "clustercore_ssh_no_dir"
_USER_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
SHELLS = ("posix", "csh")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env(env: Mapping[str, str]) -> None:
    """Environment variable names must be shell identifiers (``ValueError`` otherwise)."""
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r} for a remote worker")


def shell_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    dir: str | None = None,
    dir_if_exists: bool = False,
    report_pid: bool = False,
    shell: str = "posix",
) -> str:
    """One line for the remote login shell that runs ``argv`` with ``env`` in ``dir``
    (with ``dir_if_exists``, in the login directory when ``dir`` does not exist there)."""
    if shell not in SHELLS:
        raise ValueError(f"shell must be one of {', '.join(SHELLS)}, not {shell!r}")
    check_env(env or {})
    steps = []
    if dir:
        cd = f"cd -- {quote_dir(str(dir))}"
        # a dir that is not there is its own failure, with the shell's words before the marker
        steps.append(
            f"{{ {cd} 2>/dev/null || true; }}"
            if dir_if_exists
            else f"{{ {cd} || {{ echo; echo {DIR_MARKER}; exit 1; }}; }}"
        )
    steps += [f"export {name}={shlex.quote(value)}" for name, value in (env or {}).items()]
    if report_pid:
        steps.append(f"echo {PID_MARKER}$$")
    steps.append("exec " + " ".join(shlex.quote(str(word)) for word in argv))
    line = " && ".join(steps)
    if shell == "csh":
        if "\n" in line:
            raise ValueError("a value with a newline cannot be passed through csh")
        line = f"exec /bin/sh -c {shlex.quote(line)}"
    return line


def quote_dir(dir: str) -> str:
    """``dir`` quoted for the remote shell, with a leading ``~`` or ``~user`` expanded there as a
    shell expands it (the rest is quoted: no other expansion happens)."""
    head, sep, rest = dir.partition("/")
    if head == "~":
        prefix = '"$HOME"'
    elif head.startswith("~") and _USER_NAME.fullmatch(head[1:]):
        prefix = head  # unquoted: the shell's tilde expansion finds that user's home
    else:
        return shlex.quote(dir)
    return prefix + (sep + shlex.quote(rest) if rest else sep)


def dir_failure(output: str) -> str | None:
    """What the shell said when ``cd`` to the workers' ``dir`` failed (``None``: it did not)."""
    if DIR_MARKER not in output:
        return None
    said = [line.strip() for line in output.splitlines() if line.strip() and DIR_MARKER not in line]
    about_cd = [line for line in said if "cd" in line]  # stderr and stdout may come in either order
    return (about_cd or said or ["(the shell said nothing)"])[-1]


def parse_pid_line(line: str) -> int | None:
    """The pid from the shell's ``clustercore_ssh_pid:N`` line, else ``None``."""
    text = line.strip()
    if text.startswith(PID_MARKER) and text[len(PID_MARKER) :].isdigit():
        return int(text[len(PID_MARKER) :])
    return None
