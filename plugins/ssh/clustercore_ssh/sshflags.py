"""The ``ssh`` command-line flags the plugin understands, parsed into :class:`SSHFlags`.

``sshflags`` is what you would put between ``ssh`` and the host: a string
(split like a shell would) or a sequence of words. Understood:

* ``-p PORT``, ``-l USER``, ``-i IDENTITY_FILE`` (repeatable), ``-F CONFIG_FILE``,
  ``-J [user@]jump[:port][,...]`` (ProxyJump);
* ``-o Key=Value`` / ``-o "Key Value"`` for the options in :data:`USED_OPTIONS`;
  options that only matter to OpenSSH's own client (:data:`IGNORED_OPTIONS`) are
  accepted and ignored;
* the no-argument flags ``-T -a -x -q -n -4 -6 -v`` (accepted; Julia passes ``-T -a -x``).

Anything else raises ``ValueError`` naming it, so a typo is not silently dropped.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

USED_OPTIONS = frozenset(
    {
        "hostname", "port", "user", "identityfile", "identitiesonly", "stricthostkeychecking",
        "userknownhostsfile", "globalknownhostsfile", "hostkeyalias", "proxyjump", "proxycommand",
        "connecttimeout", "serveraliveinterval", "compression", "forwardagent",
    }
)  # fmt: skip
IGNORED_OPTIONS = frozenset(
    {
        "batchmode", "loglevel", "controlmaster", "controlpath", "controlpersist", "serveralivecountmax",
        "clearallforwardings", "forwardx11", "forwardx11trusted", "requesttty", "exitonforwardfailure",
        "tcpkeepalive", "passwordauthentication", "kbdinteractiveauthentication",
        "challengeresponseauthentication", "pubkeyauthentication", "preferredauthentications",
        "sendenv", "checkhostip", "updatehostkeys", "hashknownhosts", "visualhostkey", "addkeystoagent",
        "verifyhostkeydns", "numberofpasswordprompts", "connectionattempts", "gssapiauthentication",
    }
)  # fmt: skip
STRICT_VALUES = {"yes": "yes", "ask": "yes", "accept-new": "accept-new", "no": "no", "off": "no"}
_NO_ARGUMENT = frozenset("Taxqn46v")
_WITH_ARGUMENT = frozenset("pliFJo")


@dataclass(frozen=True)
class SSHFlags:
    """Parsed ``sshflags``; ``options`` holds ``-o`` values by lower-case key, first one wins."""

    words: tuple[str, ...] = ()
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    config_file: str | None = None
    proxy_jump: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str) -> str | None:
        return dict(self.options).get(key)


def _bad(flag: str, reason: str) -> ValueError:
    return ValueError(f"sshflags: {flag!r} {reason}")


def _check_port(flag: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise _bad(flag, f"needs a port from 1 to 65535, not {value!r}")
    return int(value)


def _check_option(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep:
        key, _, value = raw.strip().partition(" ")
    key, value = key.strip().lower(), value.strip()
    if not key or not value:
        raise _bad(f"-o {raw}", "is not Key=Value")
    if key not in USED_OPTIONS and key not in IGNORED_OPTIONS:
        raise _bad(f"-o {raw}", f"is not supported; supported options: {', '.join(sorted(USED_OPTIONS))}")
    if key == "port":
        _check_port(f"-o {raw}", value)
    elif key == "stricthostkeychecking" and value.lower() not in STRICT_VALUES:
        raise _bad(f"-o {raw}", f"must be one of {', '.join(STRICT_VALUES)}")
    elif key in ("connecttimeout", "serveraliveinterval") and not value.isdigit():
        raise _bad(f"-o {raw}", "needs a whole number of seconds")
    elif key in ("identitiesonly", "compression", "forwardagent") and value.lower() not in ("yes", "no"):
        raise _bad(f"-o {raw}", "must be yes or no")
    return key, value


def parse_sshflags(flags: str | Sequence[str] | None) -> SSHFlags:
    """Parse ``sshflags`` (a string or a sequence of words); ``ValueError`` names a bad flag."""
    if flags is None:
        return SSHFlags()
    if isinstance(flags, str):
        words = shlex.split(flags)
    elif isinstance(flags, Sequence) and all(isinstance(w, str) for w in flags):
        words = list(flags)
    else:
        raise TypeError(f"sshflags must be a string or a sequence of strings, not {flags!r}")
    port = user = config_file = proxy_jump = None
    identities: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-") or len(word) < 2:
            raise _bad(word, "is not an ssh flag (the host comes from the machine spec)")
        letters = word[1:]
        while letters and letters[0] in _NO_ARGUMENT:
            letters = letters[1:]
        if not letters:
            i += 1
            continue
        letter, value = letters[0], letters[1:]
        if letter not in _WITH_ARGUMENT:
            raise _bad(word, "is not supported (supported: -p -l -i -F -J -o and -T -a -x -q -n -4 -6 -v)")
        if not value:
            i += 1
            if i == len(words):
                raise _bad(word, "needs a value")
            value = words[i]
        flag = f"-{letter}"
        if letter == "p":
            port = _check_port(flag, value)
        elif letter == "l":
            user = value
        elif letter == "i":
            identities.append(value)
        elif letter == "F":
            config_file = value
        elif letter == "J":
            proxy_jump = value
        else:
            key, val = _check_option(value)
            options.setdefault(key, val)
        i += 1
    return SSHFlags(tuple(words), port, user, tuple(identities), config_file, proxy_jump, tuple(options.items()))
