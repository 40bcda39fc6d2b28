"""What `clustercore top` trusts when it looks for drivers: only this user's private directory;
which drivers are attachable (any that has added workers, unless told not to); what is left
of a driver in that directory when it is gone (nothing)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustercore import attach
from clustercore.testing import wait_until_gone


def _record(path: Path, ospid: int, socket_path: str) -> None:
    path.write_text(json.dumps({"ospid": ospid, "socket": socket_path, "key": "k", "argv": ["x"], "started": 0}))


def _name(ospid: int, tag: str = "0123456789ab") -> str:
    return f"driver-{ospid}-{tag}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock as its driver would (another open file: the reader's lock conflicts)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _dead_pid() -> int:
    pid = 4_000_000
    while attach._alive(pid):
        pid += 1
    return pid


def test_a_directory_put_at_the_attach_path_after_its_check_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another user puts a directory of theirs at the attach path between the check and
    # the use (the path did not exist at the check): a stale record there must not make
    # this user's `clustercore top` delete the file it names, or be listed at all.
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory another user owns")
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    theirs = tmp_path / "theirs"

    def checked_then_swapped() -> list[Path]:
        if not theirs.exists():
            theirs.mkdir(mode=0o700)
            _record(theirs / f"{_name(_dead_pid())}.json", _dead_pid(), str(precious))
            for path in (theirs, *theirs.iterdir()):
                os.chown(path, 65534, 65534)
        return [theirs]

    monkeypatch.setattr(attach, "attach_dirs", checked_then_swapped)
    assert attach.drivers() == []  # passed over, not read
    with pytest.raises(LookupError, match=f"{theirs} is not a directory of this user's that only it may enter"):
        attach.attach()  # `clustercore top` says why it did not look there
    assert precious.read_text() == "keep me"


def test_a_stale_record_removes_its_own_socket_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    dead = _dead_pid()
    _record(mine / f"{_name(dead)}.json", dead, str(precious))
    (mine / f"{_name(dead)}.sock").write_text("")
    _record(mine / "driver-x.json", os.getpid(), str(precious))  # not a driver's name: ignored
    monkeypatch.setattr(attach, "attach_dirs", lambda: [mine])
    assert attach.drivers() == []
    assert sorted(p.name for p in mine.iterdir()) == ["driver-x.json"]
    assert precious.read_text() == "keep me"


def test_a_record_is_live_while_its_lock_is_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A driver killed by SIGKILL leaves its file, and its pid may be another process's since:
    # the lock tells, as the kernel lets it go with the driver. A held lock is a live driver
    # even where its pid is not seen (a reader in another pid namespace): only the driver
    # holds it (a forked child closes its copy: the next test).
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    monkeypatch.setattr(attach, "attach_dirs", lambda: [mine])
    held = mine / f"{_name(os.getpid())}.json"
    free = mine / f"{_name(os.getpid(), 'ba9876543210')}.json"  # a live pid, but nobody holds the lock
    unseen = mine / f"{_name(_dead_pid())}.json"  # held, by a driver whose pid this reader does not see
    for record in (held, free, unseen):
        _record(record, int(record.name.split("-")[1]), "")
        record.with_suffix(".sock").write_text("")
    with _locked(held), _locked(unseen):
        assert sorted(d.file for d in attach.drivers()) == sorted([str(held), str(unseen)])
        assert sorted(p.name for p in mine.iterdir()) == sorted(
            p.name for r in (held, unseen) for p in (r, r.with_suffix(".sock"))
        )
    assert attach.drivers() == []  # the locks let go: their drivers are gone
    assert list(mine.iterdir()) == []


FORKING_DRIVER = textwrap.dedent(
    """
    import os, sys
    import clustercore as cc

    cc.allow_attach()
    child = os.fork()
    if child == 0:  # a child forked from the driver (multiprocessing's fork, say) outlives it
        quiet = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)  # the test reads the driver's output to its end
        read_end, write_end = os.pipe()
        os.read(read_end, 1)  # until the test kills it
    print("ready", flush=True)
    print(child, flush=True)
    sys.stdin.readline()
    """
)


def test_a_child_forked_from_the_driver_does_not_keep_its_file(runtime_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(FORKING_DRIVER)
    proc = _start(script)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        assert [d.ospid for d in attach.drivers() if d.ospid == proc.pid] == [proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert attach._alive(child)  # its copy of the lock's descriptor would hold the lock still
        assert [d for d in attach.drivers() if d.ospid == proc.pid] == []
        assert _left_in(runtime_dir) == []
    finally:
        os.kill(child, signal.SIGKILL)
        assert wait_until_gone([child], 30) == []


LISTING = "from clustercore import attach; print([d.ospid for d in attach.drivers()])"


def test_a_reader_in_another_pid_namespace_leaves_a_live_drivers_file(runtime_dir: Path, tmp_path: Path) -> None:
    # `clustercore top` in a container (or `unshare -p`, apptainer) that shares the directory:
    # the driver's lock is held, but its pid is not seen there.
    unshare = shutil.which("unshare")
    if os.getuid() != 0 or unshare is None:
        reason = "a new pid namespace needs root and unshare (util-linux)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    script = tmp_path / "driver.py"
    script.write_text(PLAIN_DRIVER)
    proc = _start(script)
    try:
        before = _left_in(runtime_dir)
        assert len(before) == 2
        command = [unshare, "-p", "-f", "--mount-proc", sys.executable, "-c", LISTING]
        seen = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        assert str(proc.pid) in seen.stdout.strip()[1:-1].split(", ")  # listed there too, by the pid it has here
        assert proc.poll() is None and _left_in(runtime_dir) == before
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0


def test_a_file_being_written_is_left_to_its_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    monkeypatch.setattr(attach, "attach_dirs", lambda: [mine])
    writing = mine / f".{_name(os.getpid())}.tmp"  # not locked yet: a reader must not take it for stale
    killed = mine / f".{_name(_dead_pid())}.tmp"  # its driver died writing it
    writing.write_text("")
    killed.write_text("")
    assert attach.drivers() == []
    assert list(mine.iterdir()) == [writing]


def test_a_live_record_names_the_socket_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    record = mine / f"{_name(os.getpid())}.json"
    _record(record, os.getpid(), "/somewhere/else.sock")
    monkeypatch.setattr(attach, "attach_dirs", lambda: [mine])
    with _locked(record):
        [driver] = attach.drivers()
    assert driver.socket == str(mine / f"{_name(os.getpid())}.sock")


class _RunsWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_the_driver_never_unpickles_what_an_attacher_sends(tmp_path: Path) -> None:
    import pickle

    import clustercore as cc
    from clustercore.wire.framing import FLAG_ERROR, encode_frame

    cc.allow_attach()
    marker = tmp_path / "ran"
    with attach.attach(os.getpid()) as attached:
        hostile = pickle.dumps(("status", _RunsWhenUnpickled(marker)))
        attached._transport.send_all(encode_frame(attach._REQUEST, hostile))
        reply = attached._reader.read_frame()
        assert reply is not None and reply.flags & FLAG_ERROR
        assert attached.request("info")["ospid"] == os.getpid()  # the link serves on
    assert not marker.exists()


@pytest.fixture
def unattached(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test process as a driver that was never made attachable (its own server, if any, is
    put aside); whatever the test makes attachable is closed after it."""
    monkeypatch.setattr(attach, "_server", [])
    monkeypatch.setattr(attach, "_refused", [False])
    try:
        yield
    finally:
        for server in attach._server:
            server.close()


def _attach_by_file(file: str) -> attach.Attached:
    """Attach to the driver of attach file ``file`` (this process may have another, put aside)."""
    [driver] = [d for d in attach.drivers() if d.file == file]
    return attach.Attached(driver)


def test_allow_attach_false_ends_the_accept_thread_and_every_session(unattached: None) -> None:
    import clustercore as cc

    file = cc.allow_attach()
    [server] = attach._server
    link = _attach_by_file(file)
    try:
        assert link.request("info")["ospid"] == os.getpid()
        [session] = server.sessions.values()
        cc.allow_attach(False)  # not attachable from now on: nor by what attached before
        assert not server.thread.is_alive()  # close() alone leaves accept() blocked
        assert not session.is_alive()
        with pytest.raises((ConnectionError, OSError)):
            link.request("info")
    finally:
        link.close()


def test_an_attacher_that_leaves_frees_its_session_and_chooses_no_long_timeout(
    unattached: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `clustercore top --timeout 3600` on a stuck worker, then Ctrl-C, a few times: the driver
    # serves 8 attached processes at once, and none of them may keep the next `top` out.
    import queue
    import threading

    from clustercore.wire.framing import encode_frame

    asked: queue.Queue[float] = queue.Queue()
    release = threading.Event()

    def stuck_status(timeout: float) -> list[object]:  # as status() with a worker that never answers
        asked.put(timeout)
        release.wait()
        return []

    monkeypatch.setattr(attach, "_requests", lambda: {"status": stuck_status, "info": attach._info})
    file = attach.allow_attach()
    [server] = attach._server
    try:
        for _ in range(attach._MAX_CLIENTS + 1):
            link = _attach_by_file(file)
            link._transport.send_all(encode_frame(attach._REQUEST, json.dumps(["status", {"timeout": 3600}]).encode()))
            assert asked.get(timeout=30) == attach.REQUEST_SECONDS  # running, its timeout cut to the driver's bound
            [session] = server.sessions.values()
            link.close()  # the attacher leaves before the answer
            session.join(30)
            assert not session.is_alive()
        with _attach_by_file(file) as link:
            assert link.request("info")["ospid"] == os.getpid()
    finally:
        release.set()


# --- a plain `python script.py` driver: attachable once it adds workers ---------------------------

PLAIN_DRIVER = textwrap.dedent(
    """
    import sys
    import clustercore as cc

    if sys.argv[1:] == ["refuse"]:
        cc.allow_attach(False)
    cc.addprocs(2)
    print("ready", flush=True)
    sys.stdin.readline()  # until the test is done with it
    """
)


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR for this test's drivers, here and in what it starts (short:
    a Unix socket's path has room for 107 bytes); its attach directory is ``/clustercore``."""
    path = Path(tempfile.mkdtemp(prefix="cc-run-", dir="/tmp"))  # mode 0700
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    monkeypatch.delenv(attach.ATTACH_ENV, raising=False)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _start(script: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # a deadline: pytest's timeout
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    return proc


def _top_once(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "clustercore", "top", "--once", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _left_in(runtime: Path) -> list[str]:
    directory = runtime / "clustercore"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_plain_driver_with_workers_is_attachable_and_leaves_nothing(runtime_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(PLAIN_DRIVER)
    proc = _start(script)
    try:
        done = _top_once("--pid", str(proc.pid))  # not the only one: top also looks in /tmp/clustercore-<uid>
        assert done.returncode == 0, done.stderr
        assert f"driver os pid {proc.pid}, 2 workers" in done.stdout
        with attach.attach(proc.pid) as link:
            ospids = [r.ospid for r in link.status()[1:]]
        record = json.loads((runtime_dir / "clustercore" / _json_of(runtime_dir)).read_text())
        assert "cookie" not in record and len(record["key"]) == 64  # its own key, not the cluster's cookie
    finally:
        _, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, err
    assert _left_in(runtime_dir) == []
    assert wait_until_gone(ospids, 30) == []


def _json_of(runtime: Path) -> str:
    [name] = [n for n in _left_in(runtime) if n.endswith(".json")]
    return name


@pytest.mark.parametrize("how", ["environment", "allow_attach(False)"])
def test_a_driver_told_not_to_is_not_attachable(how: str, runtime_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(PLAIN_DRIVER)
    if how == "environment":
        proc = _start(script, env={attach.ATTACH_ENV: "0"})
    else:
        proc = _start(script, "refuse")
    try:
        done = _top_once("--pid", str(proc.pid))
        assert done.returncode == 1 and f"no attachable driver with os pid {proc.pid}" in done.stderr
        assert _left_in(runtime_dir) == []
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("value", "on"),
    [
        ("0", False),
        ("false", False),
        ("No", False),
        ("OFF", False),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("", True),
    ],
)
def test_clustercore_attach_takes_the_usual_spellings_of_on_and_off(
    value: str, on: bool, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attach, "_server", [])  # this test process as a driver that was never attachable
    monkeypatch.setattr(attach, "_refused", [False])
    monkeypatch.setenv(attach.ATTACH_ENV, value)
    attach.attach_by_default()
    try:
        assert bool(attach._server) is on
        assert len(_left_in(runtime_dir)) == (2 if on else 0)
    finally:
        for server in attach._server:
            server.close()


def test_clustercore_attach_neither_on_nor_off_stops_addprocs(
    fresh: None, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clustercore as cc

    monkeypatch.setattr(attach, "_server", [])
    monkeypatch.setattr(attach, "_refused", [False])
    monkeypatch.setenv(attach.ATTACH_ENV, "disabled")
    for _ in range(2):  # every addprocs says so, not only the first
        with pytest.raises(ValueError, match="CLUSTERCORE_ATTACH='disabled': use 1 \\(on\\) or 0 \\(off\\)"):
            cc.addprocs(1)
    assert cc.workers() == [1] and _left_in(runtime_dir) == []


def test_clustercore_runs_nothing_with_attach_neither_on_nor_off(runtime_dir: Path) -> None:
    command = [sys.executable, "-m", "clustercore", "-c", "print('ran')"]
    env = {**os.environ, attach.ATTACH_ENV: "maybe"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert "clustercore: CLUSTERCORE_ATTACH='maybe': use 1 (on) or 0 (off)" in done.stderr


def test_a_reader_looks_where_a_driver_without_xdg_runtime_dir_publishes(
    runtime_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch job has no XDG_RUNTIME_DIR: its driver publishes in /tmp/clustercore-<uid>. The
    # user logs in to the node to run `clustercore top`, and the login sets XDG_RUNTIME_DIR.
    script = tmp_path / "driver.py"
    script.write_text(PLAIN_DRIVER)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    proc = _start(script)
    try:
        shared = Path(attach.SHARED_DIR.format(uid=os.getuid()))
        assert next(d.file for d in attach.drivers() if d.ospid == proc.pid).startswith(f"{shared}/")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))  # the login shell's
        assert attach.attach_dirs() == [runtime_dir / "clustercore", shared]
        assert [d.ospid for d in attach.drivers() if d.ospid == proc.pid] == [proc.pid]
        with attach.attach(proc.pid) as link:
            assert link.request("info")["ospid"] == proc.pid
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0


def test_top_says_when_the_shared_directory_is_not_this_users_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from clustercore import top

    squatted = tmp_path / "clustercore-shared"
    squatted.mkdir(mode=0o755)  # others may enter it: another user could have made it first
    monkeypatch.setattr(attach, "SHARED_DIR", str(squatted))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert top.main(["--once"]) == 1
    said = capsys.readouterr().err
    assert f"not one attachable driver in {squatted}" in said
    assert f"{squatted} is not a directory of this user's that only it may enter: not looked in" in said


def test_a_killed_drivers_file_is_removed_by_the_next_reader(runtime_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(PLAIN_DRIVER)
    proc = _start(script)
    try:
        with attach.attach(proc.pid) as link:
            ospids = [r.ospid for r in link.status()[1:]]
        assert len(ospids) == 2
        left = _left_in(runtime_dir)
        assert len(left) == 2 and {Path(n).suffix for n in left} == {".json", ".sock"}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert _left_in(runtime_dir) == left  # nothing ran at its exit
    done = _top_once("--pid", str(proc.pid))
    assert done.returncode == 1 and f"no attachable driver with os pid {proc.pid}" in done.stderr
    assert _left_in(runtime_dir) == []
    assert wait_until_gone(ospids, 30) == []  # its workers went with it (their link to it closed)
