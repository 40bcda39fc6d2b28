"""What `clustercore top` trusts when it looks for drivers: only this user's private directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clustercore import attach


def _record(path: Path, ospid: int, socket_path: str) -> None:
    path.write_text(json.dumps({"ospid": ospid, "socket": socket_path, "cookie": "c", "argv": ["x"], "started": 0}))


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

    def checked_then_swapped(create: bool = False) -> Path:
        theirs.mkdir(mode=0o700)
        _record(theirs / f"driver-{_dead_pid()}.json", _dead_pid(), str(precious))
        for path in (theirs, *theirs.iterdir()):
            os.chown(path, 65534, 65534)
        return theirs

    monkeypatch.setattr(attach, "attach_dir", checked_then_swapped)
    with pytest.raises(PermissionError):
        attach.drivers()
    assert precious.read_text() == "keep me"


def test_a_stale_record_removes_its_own_socket_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    dead = _dead_pid()
    _record(mine / f"driver-{dead}.json", dead, str(precious))
    (mine / f"driver-{dead}.sock").write_text("")
    _record(mine / "driver-x.json", os.getpid(), str(precious))  # not a driver's name: ignored
    monkeypatch.setattr(attach, "attach_dir", lambda create=False: mine)
    assert attach.drivers() == []
    assert sorted(p.name for p in mine.iterdir()) == ["driver-x.json"]
    assert precious.read_text() == "keep me"


def test_a_live_record_names_the_socket_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    _record(mine / f"driver-{os.getpid()}.json", os.getpid(), "/somewhere/else.sock")
    monkeypatch.setattr(attach, "attach_dir", lambda create=False: mine)
    [driver] = attach.drivers()
    assert driver.socket == str(mine / f"driver-{os.getpid()}.sock")


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
