"""Machine specifications, parsed as Julia's ``SSHManager`` parses them.

A machine is ``"[user@]host[:port] [bind_addr[:port]]"`` or ``(spec, count)``
with ``count`` a positive int or ``"auto"`` (the host's CPU threads). IPv6
literals go in brackets: ``"[fd00::5]:2222 [fd00::5]"``. ``host`` may be an
alias from ``~/.ssh/config``. ``bind_addr`` is the IP address the worker
listens on and other workers dial (Julia's ``--bind-to``).

Entries with the same spec are merged as Julia merges them: counts add up,
``"auto"`` replaces a number and a later number replaces ``"auto"``.
Anything malformed raises ``ValueError`` quoting the bad text, before any I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Count = int | Literal["auto"]
_NAME = re.compile(r"[^\s@\[\]/]+")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class MachineSpec:
    """One machine entry: where to log in, where the worker listens, how many workers."""

    text: str
    host: str
    user: str | None = None
    port: int | None = None
    bind_to: str | None = None
    count: Count = 1

    @property
    def destination(self) -> str:
        """``user@host`` (or ``host``), as in an ``ssh`` command line."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.text


def _bad(text: str, reason: str) -> ValueError:
    return ValueError(f"invalid machine spec {text!r}: {reason}")


def _port(text: str, port_text: str, low: int = 1) -> int:
    if not _PORT.fullmatch(port_text) or not low <= int(port_text) <= 65535:
        raise _bad(text, f"invalid port {port_text!r} (a number from {low} to 65535)")
    return int(port_text)


def parse_address(text: str) -> tuple[str | None, str, int | None]:
    """``"[user@]host[:port]"`` -> ``(user, host, port)``; IPv6 hosts in brackets."""
    user, at, rest = text.rpartition("@")
    if at and not _NAME.fullmatch(user):
        raise _bad(text, f"invalid user {user!r}")
    if rest.startswith("["):  # RFC 2732 brackets: [v6]:port
        host, closed, tail = rest[1:].partition("]")
        if not closed or not host or not _NAME.fullmatch(host.replace(":", "")):
            raise _bad(text, "an address in brackets must look like [host] or [host]:port")
        if tail and not tail.startswith(":"):
            raise _bad(text, f"unexpected {tail!r} after ']'")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_ = rest.partition(":")
        if ":" in port_text_:
            raise _bad(text, "an IPv6 address must be written in brackets, e.g. [fd00::5]:22")
        port_text = port_text_ if colon else None
        if not host or not _NAME.fullmatch(host):
            raise _bad(text, f"invalid host {host!r}")
    if host.startswith("-") or (user or "").startswith("-"):
        raise _bad(text, "user and host must not start with '-'")
    return (user or None), host, (None if port_text is None else _port(text, port_text))


def parse_bind_to(text: str, bind: str) -> str:
    """Check ``bind_addr[:port]`` (an IP literal, IPv6 in brackets) and return it."""
    if bind.startswith("["):
        addr, closed, tail = bind[1:].partition("]")
        if not closed or (tail and not tail.startswith(":")):
            raise _bad(text, f"invalid bind address {bind!r}")
        port_text = tail[1:] if tail else None
    elif bind.count(":") == 1:
        addr, port_text = bind.split(":")
    else:
        addr, port_text = bind, None
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise _bad(text, f"the bind address must be an IP address, not {addr!r}") from None
    if port_text is not None:
        _port(text, port_text, low=0)
    return bind


def parse_spec(text: str, count: Any = 1) -> MachineSpec:
    """Parse one ``"[user@]host[:port] [bind_addr[:port]]"`` with its worker count."""
    if not isinstance(text, str):
        raise TypeError(f"a machine spec must be a str, not {type(text).__name__}: {text!r}")
    words = text.split()
    if not words:
        raise _bad(text, "it is empty")
    if len(words) > 2:
        raise _bad(text, "expected '[user@]host[:port] [bind_addr[:port]]', found more than two words")
    user, host, port = parse_address(words[0])
    bind_to = parse_bind_to(text, words[1]) if len(words) == 2 else None
    return MachineSpec(" ".join(words), host, user, port, bind_to, check_count(text, count))


def check_count(text: str, count: Any) -> Count:
    """A worker count: a positive int or ``"auto"``."""
    if count == "auto":
        return "auto"
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise _bad(text, f"the count must be a positive int or 'auto', not {count!r}")
    return count


def parse_machines(machines: Iterable[Any]) -> list[MachineSpec]:
    """Parse a machines list, merging repeated specs as Julia does; keeps first-seen order."""
    if isinstance(machines, (str, bytes)) or not isinstance(machines, Iterable):
        raise TypeError(f"machines must be a list of specs or (spec, count) pairs, not {machines!r}")
    merged: dict[str, MachineSpec] = {}
    for entry in machines:
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise ValueError(f"a machine entry with a count is (spec, count), not {entry!r}")
            spec = parse_spec(entry[0], entry[1])
        else:
            spec = parse_spec(entry)
        seen = merged.get(spec.text)
        if seen is not None and isinstance(seen.count, int) and isinstance(spec.count, int):
            spec = MachineSpec(spec.text, spec.host, spec.user, spec.port, spec.bind_to, seen.count + spec.count)
        merged[spec.text] = spec
    return list(merged.values())
