"""sshflags: the ssh options the plugin honours; anything else is refused by name."""

from __future__ import annotations

import pytest
from clustercore_ssh.sshflags import parse_sshflags


def test_string_and_sequence_forms_agree() -> None:
    a = parse_sshflags("-i ~/.ssh/key -p 2200 -o 'StrictHostKeyChecking no' -l alice -F /etc/cfg -J jump")
    b = parse_sshflags(["-i~/.ssh/key", "-p2200", "-oStrictHostKeyChecking=no", "-lalice", "-F", "/etc/cfg", "-Jjump"])
    for flags in (a, b):
        assert flags.identity_files == ("~/.ssh/key",)
        assert flags.port == 2200 and flags.user == "alice"
        assert flags.config_file == "/etc/cfg" and flags.proxy_jump == "jump"
        assert flags.option("stricthostkeychecking") == "no"


def test_first_o_value_wins_like_openssh() -> None:
    flags = parse_sshflags(["-o", "User=a", "-o", "user=b"])
    assert flags.option("user") == "a"


def test_julia_style_no_argument_flags_are_accepted() -> None:
    flags = parse_sshflags("-T -a -x -Tax -q -o ClearAllForwardings=yes -o BatchMode=yes")
    assert flags.options == (("clearallforwardings", "yes"), ("batchmode", "yes"))


def test_repeated_identity_files_keep_order() -> None:
    assert parse_sshflags("-i a -i b").identity_files == ("a", "b")


def test_empty() -> None:
    assert parse_sshflags(None).words == () and parse_sshflags("").words == ()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("-L 8080:localhost:80", "'-L' is not supported"),
        ("-R 1:h:2", "'-R' is not supported"),
        ("-p", "needs a value"),
        ("-p 0", "port from 1 to 65535"),
        ("-p ssh", "port from 1 to 65535"),
        ("-o Frobnicate=yes", "is not supported"),
        ("-o StrictHostKeyChecking=maybe", "must be one of"),
        ("-o Port=abc", "port from 1 to 65535"),
        ("-o ConnectTimeout=soon", "whole number of seconds"),
        ("-o IdentitiesOnly=sure", "yes or no"),
        ("-o User", "is not Key=Value"),
        ("host", "is not an ssh flag"),
        ("-", "is not an ssh flag"),
    ],
)
def test_bad_flags_are_named(flags: str, message: str) -> None:
    with pytest.raises(ValueError, match="sshflags") as info:
        parse_sshflags(flags)
    assert message in str(info.value)


def test_wrong_type() -> None:
    with pytest.raises(TypeError):
        parse_sshflags(["-p", 22])  # type: ignore[list-item]
