"""Spec, flags and ssh_config merge with OpenSSH's precedence; ProxyJump chains resolve."""

from __future__ import annotations

from pathlib import Path

import pytest
from clustercore_ssh.hostconfig import resolve_host
from clustercore_ssh.sshflags import parse_sshflags

CONFIG = """\
Host web
    HostName 10.1.2.3
    Port 2201
    User deploy
    IdentityFile ~/.ssh/web_key
    IdentitiesOnly yes
    UserKnownHostsFile /tmp/kh1 /tmp/kh2
    StrictHostKeyChecking accept-new
    ConnectTimeout 7
    ServerAliveInterval 5

Host behind
    HostName 192.168.9.9
    ProxyJump web

Host cmd
    ProxyCommand nc %h %p

Host open
    StrictHostKeyChecking no
    UserKnownHostsFile none
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    return str(path)


def test_config_values(config: str) -> None:
    s = resolve_host(None, "web", None, parse_sshflags(["-F", config]))
    assert (s.hostname, s.port, s.user) == ("10.1.2.3", 2201, "deploy")
    assert s.identity_files[0].endswith("/.ssh/web_key") and not s.identity_files[0].startswith("~")
    assert s.identities_only and s.strict == "accept-new"
    assert s.known_hosts_files == ("/tmp/kh1", "/tmp/kh2")
    assert s.connect_timeout == 7 and s.keepalive == 5
    assert s.known_hosts_name == "[10.1.2.3]:2201"
    assert s.label == "deploy@web (10.1.2.3:2201)"


def test_spec_beats_flags_beat_config(config: str) -> None:
    flags = parse_sshflags(["-F", config, "-p", "2300", "-l", "flaguser", "-i", "/k1", "-o", "HostName=10.9.9.9"])
    s = resolve_host("specuser", "web", 2400, flags)
    assert (s.user, s.port, s.hostname) == ("specuser", 2400, "10.9.9.9")
    s = resolve_host(None, "web", None, flags)
    assert (s.user, s.port) == ("flaguser", 2300)
    assert s.identity_files[0] == "/k1"  # -i first, then IdentityFile


def test_defaults_for_unknown_host(config: str) -> None:
    s = resolve_host(None, "elsewhere", None, parse_sshflags(["-F", config]))
    assert (s.hostname, s.port, s.strict, s.jump, s.proxy_command) == ("elsewhere", 22, "yes", None, None)
    assert s.known_hosts_name == "elsewhere"


def test_strict_no_and_known_hosts_none(config: str) -> None:
    s = resolve_host(None, "open", None, parse_sshflags(["-F", config]))
    assert s.strict == "no" and s.known_hosts_files == ()
    s = resolve_host(None, "open", None, parse_sshflags(["-F", config, "-o", "StrictHostKeyChecking=yes"]))
    assert s.strict == "yes"


def test_proxy_jump_from_config_and_flags(config: str) -> None:
    s = resolve_host(None, "behind", None, parse_sshflags(["-F", config]))
    assert s.jump is not None and s.jump.hostname == "10.1.2.3" and s.jump.user == "deploy"
    s = resolve_host(None, "behind", None, parse_sshflags(["-F", config, "-J", "a@j1:2022,j2"]))
    assert s.jump is not None and s.jump.hostname == "j2"
    assert s.jump.jump is not None and (s.jump.jump.user, s.jump.jump.hostname, s.jump.jump.port) == ("a", "j1", 2022)
    assert s.jump.jump.jump is None


def test_proxy_command_tokens(config: str) -> None:
    s = resolve_host("u", "cmd", 2022, parse_sshflags(["-F", config]))
    assert s.proxy_command == "nc cmd 2022"
    s = resolve_host("u", "x", 2022, parse_sshflags(["-F", config, "-o", "ProxyCommand=connect %r@%h:%p"]))
    assert s.proxy_command == "connect u@x:2022"


def test_jump_beats_command_and_none_disables(config: str) -> None:
    s = resolve_host(None, "cmd", None, parse_sshflags(["-F", config, "-J", "web"]))
    assert s.jump is not None and s.proxy_command is None
    s = resolve_host(None, "behind", None, parse_sshflags(["-F", config, "-o", "ProxyJump=none"]))
    assert s.jump is None


def test_jump_loop_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop"
    path.write_text("Host a\n    ProxyJump b\nHost b\n    ProxyJump a\n")
    with pytest.raises(ValueError, match="a loop"):
        resolve_host(None, "a", None, parse_sshflags(["-F", str(path)]))


def test_missing_config_file_given_with_F(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="-F"):
        resolve_host(None, "a", None, parse_sshflags(["-F", str(tmp_path / "nope")]))


def test_pool_key_shares_equal_destinations(config: str) -> None:
    flags = parse_sshflags(["-F", config])
    assert resolve_host(None, "web", None, flags).pool_key == resolve_host("deploy", "10.1.2.3", 2201, flags).pool_key
    assert resolve_host(None, "web", None, flags).pool_key != resolve_host("other", "web", None, flags).pool_key
