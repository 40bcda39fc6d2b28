"""Machine specs parse as Julia's SSHManager parses them; bad ones fail naming the text."""

from __future__ import annotations

import pytest
from clustercore_ssh.spec import MachineSpec, parse_machines, parse_spec


@pytest.mark.parametrize(
    ("text", "user", "host", "port", "bind_to"),
    [
        ("remote1", None, "remote1", None, None),
        ("user@remote2", "user", "remote2", None, None),
        ("user@remote3:2222", "user", "remote3", 2222, None),
        ("10.0.0.5:22 10.0.0.5", None, "10.0.0.5", 22, "10.0.0.5"),
        ("host 192.168.1.2:9000", None, "host", None, "192.168.1.2:9000"),
        ("[fd00::5]", None, "fd00::5", None, None),
        ("[fd00::5]:2222 [fd00::5]:9000", None, "fd00::5", 2222, "[fd00::5]:9000"),
        ("alice@[::1]:22", "alice", "::1", 22, None),
        ("  spaced-out   127.0.0.1  ", None, "spaced-out", None, "127.0.0.1"),
        ("node.example.org:65535", None, "node.example.org", 65535, None),
        ("host ::1", None, "host", None, "::1"),
    ],
)
def test_good_specs(text: str, user: str | None, host: str, port: int | None, bind_to: str | None) -> None:
    spec = parse_spec(text)
    assert (spec.user, spec.host, spec.port, spec.bind_to, spec.count) == (user, host, port, bind_to, 1)
    assert spec.text == " ".join(text.split())


def test_destination_is_what_ssh_takes() -> None:
    assert parse_spec("bob@h:22").destination == "bob@h"
    assert parse_spec("h").destination == "h"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("host:", "invalid port ''"),
        ("host:ssh", "invalid port 'ssh'"),
        ("host:0", "invalid port '0'"),
        ("host:65536", "invalid port '65536'"),
        ("host:+22", "invalid port '+22'"),
        ("host:2_2", "invalid port '2_2'"),
        ("fd00::5", "IPv6 address must be written in brackets"),
        ("host:22:33", "IPv6 address must be written in brackets"),
        ("[fd00::5", "in brackets"),
        ("[]:22", "in brackets"),
        ("[fd00::5]x", "unexpected 'x'"),
        ("@host", "invalid user ''"),
        (":22", "invalid host ''"),
        ("-oProxyCommand=x", "must not start with '-'"),
        ("a b c", "more than two words"),
        ("host not-an-ip", "must be an IP address, not 'not-an-ip'"),
        ("host 10.0.0.1:x", "invalid port 'x'"),
        ("host 10.0.0.1:70000", "invalid port '70000'"),
        ("host [fd00::1", "invalid bind address"),
    ],
)
def test_bad_specs_name_the_text(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_spec(text)
    assert repr(text) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", "AUTO", True, None])
def test_bad_counts(count: object) -> None:
    with pytest.raises(ValueError, match="count must be a positive int or 'auto'"):
        parse_spec("host", count)


def test_non_string_spec_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        parse_spec(42)  # type: ignore[arg-type]


def test_machines_merge_like_julia() -> None:
    specs = parse_machines(["a", ("b", 2), ("a", 3), ("b", "auto"), "c", ("c", "auto"), ("c", 4), "a  "])
    assert [(s.text, s.count) for s in specs] == [("a", 5), ("b", "auto"), ("c", 4)]
    assert all(isinstance(s, MachineSpec) for s in specs)


def test_machines_keep_first_seen_order_and_bind_specs_apart() -> None:
    specs = parse_machines(["h 10.0.0.1", "h", ("h 10.0.0.1", 2)])
    assert [(s.text, s.count) for s in specs] == [("h 10.0.0.1", 3), ("h", 1)]


@pytest.mark.parametrize("machines", ["host", b"host", 3, None])
def test_machines_must_be_a_list(machines: object) -> None:
    with pytest.raises(TypeError, match="machines must be a list"):
        parse_machines(machines)  # type: ignore[arg-type]


def test_entry_with_count_is_a_pair() -> None:
    with pytest.raises(ValueError, match=r"\(spec, count\)"):
        parse_machines([("host", 2, 3)])
    assert parse_machines([["host", 2]])[0].count == 2
