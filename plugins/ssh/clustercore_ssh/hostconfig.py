"""Where and how to log in to a host: the machine spec, ``sshflags`` and ``ssh_config`` merged.

Precedence follows OpenSSH: the spec's ``user@`` and ``:port`` first, then the
flags (``-l``, ``-p``, ``-i``, ``-J``, ``-o``), then the config file (``-F FILE``,
else ``~/.ssh/config``; ``/etc/ssh/ssh_config`` is not read). Host key
checking is on unless ``StrictHostKeyChecking`` says otherwise; ``ask`` (the
OpenSSH default) means ``yes`` here because nobody can be asked.
"""

from __future__ import annotations

import getpass
import os
import threading
from dataclasses import dataclass, replace
from typing import Any

from .spec import parse_address
from .sshflags import STRICT_VALUES, SSHFlags

DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_KEEPALIVE = 15
MAX_JUMPS = 8
_JUMP_OPTIONS = ("stricthostkeychecking", "userknownhostsfile", "globalknownhostsfile", "identitiesonly")


@dataclass(frozen=True)
class HostSettings:
    """Everything needed to open one SSH connection."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = DEFAULT_KNOWN_HOSTS
    global_known_hosts_files: tuple[str, ...] = GLOBAL_KNOWN_HOSTS
    host_key_alias: str | None = None
    strict: str = "yes"
    jump: HostSettings | None = None
    proxy_command: str | None = None
    connect_timeout: float | None = None
    keepalive: int = DEFAULT_KEEPALIVE
    compress: bool = False

    @property
    def known_hosts_name(self) -> str:
        """The name this host's key is filed under in known_hosts."""
        name = self.host_key_alias or self.hostname
        return name if self.port == 22 else f"[{name}]:{self.port}"

    @property
    def label(self) -> str:
        """``user@alias`` plus the address when the alias is not the address, for messages."""
        where = f"{self.user}@{self.alias}"
        address = f"{self.hostname}:{self.port}"
        return where if self.alias == address else f"{where} ({address})"

    @property
    def pool_key(self) -> tuple[Any, ...]:
        """Connections with equal keys can share one SSH transport."""
        return (self.user, self.hostname, self.port, self.jump and self.jump.pool_key, self.proxy_command)


_texts: dict[str, str] = {}
_texts_lock = threading.Lock()


def ssh_config_text(path: str | None) -> str:
    """The ``ssh_config`` file's text (cached by path); empty when there is none."""
    explicit = path is not None
    path = os.path.expanduser(path or "~/.ssh/config")
    with _texts_lock:
        if path not in _texts:
            if not os.path.exists(path):
                if explicit:
                    raise FileNotFoundError(f"ssh config file {path!r} (from sshflags -F) does not exist")
                _texts[path] = ""
            else:
                with open(path, encoding="utf-8") as f:
                    _texts[path] = f.read()
        return _texts[path]


def _files(value: str | list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    words = value if isinstance(value, list) else value.split()
    if [w.lower() for w in words] == ["none"]:
        return ()
    return tuple(os.path.expanduser(w) for w in words)


def _lookup(host: str, user: str | None, port: int | None, flags: SSHFlags) -> dict[str, Any]:
    """paramiko's lookup of ``host`` with the spec and flags first: as in OpenSSH, the first value
    obtained wins, and ``%h``/``%p``/``%r`` tokens expand to the values actually used."""
    import paramiko

    first = ["Match all"]
    first += [f"Port {p}" for p in (port, flags.port) if p]
    first += [f"User {u}" for u in (user, flags.user) if u]
    first += [f"{key} {value}" for key, value in flags.options if key != "identityfile"]
    if flags.proxy_jump:
        first.append(f"ProxyJump {flags.proxy_jump}")
    text = "\n".join(first) + "\n" + ssh_config_text(flags.config_file)
    return dict(paramiko.SSHConfig.from_text(text).lookup(host))


def resolve_host(user: str | None, host: str, port: int | None, flags: SSHFlags, depth: int = 0) -> HostSettings:
    """Merge spec, flags and config for ``host``; also resolves the ProxyJump chain."""
    if depth > MAX_JUMPS:
        raise ValueError(f"ProxyJump chain to {host!r} is longer than {MAX_JUMPS} hops (a loop?)")
    found = _lookup(host, user, port, flags)
    hostname = found.get("hostname") or host
    the_port = int(found.get("port") or 22)
    the_user = found.get("user") or getpass.getuser()
    identities = [*flags.identity_files, *(v for k, v in flags.options if k == "identityfile")]
    identities += found.get("identityfile", [])
    timeout, alive = found.get("connecttimeout"), found.get("serveraliveinterval")
    settings = HostSettings(
        alias=host,
        hostname=hostname,
        port=the_port,
        user=the_user,
        identity_files=tuple(dict.fromkeys(os.path.expanduser(p) for p in identities)),
        identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
        known_hosts_files=_files(found.get("userknownhostsfile"), DEFAULT_KNOWN_HOSTS),
        global_known_hosts_files=_files(found.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS),
        host_key_alias=found.get("hostkeyalias"),
        strict=STRICT_VALUES.get(str(found.get("stricthostkeychecking", "ask")).lower(), "yes"),
        connect_timeout=float(timeout) if timeout else None,
        keepalive=int(alive) if alive else DEFAULT_KEEPALIVE,
        compress=str(found.get("compression", "no")).lower() == "yes",
    )
    jump, command = found.get("proxyjump"), found.get("proxycommand")
    if jump and command:  # OpenSSH keeps the first one given: the command line's, if any
        given = dict(flags.options)
        if flags.proxy_jump is None and "proxyjump" not in given and "proxycommand" in given:
            jump = None
    if jump and jump.lower() != "none":
        settings = replace(settings, jump=_resolve_jump(jump, flags, depth))
    elif command and command.lower() != "none":
        settings = replace(settings, proxy_command=command)
    return settings


def _resolve_jump(chain: str, flags: SSHFlags, depth: int) -> HostSettings:
    """``"j1,j2"``: the last hop is the proxy; it is reached through the ones before it."""
    *before, last = [hop.strip() for hop in chain.split(",")]
    if not last or any(not hop for hop in before):
        raise ValueError(f"invalid ProxyJump {chain!r}")
    user, host, port = parse_address(last)
    jump_flags = SSHFlags(
        identity_files=flags.identity_files,
        config_file=flags.config_file,
        proxy_jump=",".join(before) or None,
        options=tuple((k, v) for k, v in flags.options if k in _JUMP_OPTIONS),
    )
    return resolve_host(user, host, port, jump_flags, depth + 1)
