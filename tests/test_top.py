"""``clustercore top`` attached to a real driver: a driver script with workers and a stuck
call runs in a subprocess, ``clustercore top --once --calls`` names the stuck call; another
uid cannot read the attach file nor reach the socket."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustercore.attach import attach, attach_dir, drivers
from clustercore.clusterstatus import CallInFlight, WorkerStatus
from clustercore.testing import wait_until_gone
from clustercore.top import render_table

from .test_hostile import ATTACKER_PYTHON, NOBODY, SETPRIV, _need_another_user

DRIVER = textwrap.dedent(
    """
    import sys, time
    import clustercore as cc

    def stuck_in_the_middle(ch):
        return cc.take(ch)

    ch = cc.RemoteChannel(lambda: cc.Channel(1), 1)
    f = cc.remotecall(stuck_in_the_middle, 2, ch)
    deadline = time.monotonic() + 60
    while not any(r.calls_in_flight for r in cc.status()):
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.read()  # until the test is done with us
    cc.put(ch, 1)
    cc.fetch(f)
    """
)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A driver run as ``clustercore -p 2 script.py`` (attachable by default) with one stuck call."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ}
    env.pop("CLUSTERCORE_ATTACH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "clustercore", "-p", "2", str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # a deadline: pytest's timeout; the script's own wait is 60 s
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        yield proc
    finally:
        if proc.poll() is None:
            proc.communicate("", timeout=60)
        else:
            proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert not [d for d in drivers() if d.ospid == proc.pid], "the attach file outlived its driver"


def top(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clustercore", "top", *args], capture_output=True, text=True, timeout=60
    )


def test_top_once_names_the_stuck_call(driver: subprocess.Popen[str]) -> None:
    done = top("--pid", str(driver.pid), "--once", "--calls")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"driver os pid {driver.pid}, 2 workers, 1 busy" in out
    assert "stuck_in_the_middle" in out  # the table's oldest call, and the traceback's title
    assert "pid 2: stuck_in_the_middle, running" in out
    assert "in stuck_in_the_middle" in out and "in take" in out  # the traceback itself
    assert "busy" in out and "idle" in out


def test_attach_from_python(driver: subprocess.Popen[str]) -> None:
    with attach(driver.pid) as link:
        rows = link.status()
        assert [r.pid for r in rows] == [1, 2, 3]
        assert rows[1].state == "busy" and rows[1].oldest_call is not None
        assert rows[1].oldest_call.function == "stuck_in_the_middle"
        calls = link.calls_in_flight(2)
        assert len(calls) == 1 and "in stuck_in_the_middle" in calls[0].traceback
        with pytest.raises(ValueError):
            link.calls_in_flight(99)  # the driver's exception, raised here


def test_the_attach_file_and_socket_are_the_users_alone(driver: subprocess.Popen[str]) -> None:
    (found,) = [d for d in drivers() if d.ospid == driver.pid]
    directory = attach_dir()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert Path(found.file).stat().st_mode & 0o777 == 0o600
    assert json.loads(Path(found.file).read_text())["ospid"] == driver.pid
    _need_another_user()
    probe = textwrap.dedent(
        """
        import socket, sys
        file, sock_path = sys.argv[1:]
        unix = socket.AF_UNIX
        attempts = {"read": lambda: open(file).read(), "connect": lambda: socket.socket(unix).connect(sock_path)}
        for what, attempt in attempts.items():
            try:
                attempt()
                print(what, "succeeded")
            except PermissionError:
                print(what, "refused")
        """
    )
    command = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ATTACKER_PYTHON, "-c", probe]
    done = subprocess.run([*command, found.file, found.socket], capture_output=True, text=True, timeout=60, cwd="/")  # type: ignore[list-item]
    assert done.stdout.split("\n")[:2] == ["read refused", "connect refused"], done.stderr


def test_no_driver_to_attach_to() -> None:
    done = top("--pid", "1", "--once")  # pid 1 of this machine is never an attachable driver
    assert done.returncode == 1
    assert "no attachable driver with os pid 1" in done.stderr


def test_workers_are_gone_after_the_driver(driver: subprocess.Popen[str]) -> None:
    with attach(driver.pid) as link:
        ospids = [r.ospid for r in link.status()[1:]]
    driver.communicate("", timeout=60)
    assert wait_until_gone(ospids, 30) == []


def test_top_live_in_a_terminal(driver: subprocess.Popen[str]) -> None:
    """The interactive view in a pseudo-terminal: the table, ``t`` for the selected row's
    tracebacks (the stuck call sorts first), any key back, ``q`` to quit."""
    fd, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # rows, columns
    top = subprocess.Popen(
        [sys.executable, "-m", "clustercore", "top", "--pid", str(driver.pid)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"},
    )
    os.close(terminal)
    seen = bytearray()

    def until(text: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared; the screen had: {bytes(seen)[-3000:]!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    seen.extend(os.read(fd, 65536))
                except OSError:  # the child closed the terminal
                    break

    try:
        until(b"stuck_in_the_middle")
        until(b"[t] tracebacks")
        seen.clear()
        os.write(fd, b"t")
        until(b"pid 2: stuck_in_the_middle, running")
        until(b"in take")
        os.write(fd, b"x")  # back to the table
        seen.clear()
        until(b"sorted by oldest call")
        os.write(fd, b"s")
        until(b"sorted by pid")
        os.write(fd, b"q")
        assert top.wait(30) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(30)
        os.close(fd)


def row(pid: int, age: float | None) -> WorkerStatus:
    calls = () if age is None else (CallInFlight(pid, f"job{pid}", 0.0, age, 1),)
    state = "busy" if calls else "idle"
    return WorkerStatus(pid, "h", 100 + pid, "local", state, calls, 1, 1, 0, 0, 0, 1 << 20, 0.0, 1, 0, 0, 0, 0, 0)


def test_a_long_table_shows_a_window_around_the_selected_row() -> None:
    """64 workers on a 20-line terminal: the rows around the selected one, and which they are."""
    from rich.console import Console

    rows = [row(1, None)] + [row(pid, float(pid)) for pid in range(2, 66)]  # pid 65 has the oldest call
    console = Console(record=True, width=200)
    console.print(render_table(rows, "oldest", 40, 4242, limit=10))
    text = console.export_text()
    assert "64 workers, 64 busy" in text and "rows 36-45 of 65" in text
    shown = [int(line.split()[1]) for line in text.splitlines() if line.startswith("│") and line.split()[1].isdigit()]
    assert shown == list(range(65 - 35, 65 - 45, -1))  # oldest call first: pid 65, 64, ...; rows 36 to 45
    console = Console(record=True, width=200)
    console.print(render_table(rows, "oldest", 0, 4242, limit=10))
    text = console.export_text()
    assert "rows 1-10 of 65" in text and "job65" in text
