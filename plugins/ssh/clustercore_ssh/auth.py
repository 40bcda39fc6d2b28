"""Public-key authentication: identity files, then the SSH agent, as OpenSSH orders them.

Identity files come from ``-i`` and ``IdentityFile``; without any, the
default ``~/.ssh/id_ed25519``, ``id_ecdsa`` and ``id_rsa`` are tried.
``IdentitiesOnly yes`` leaves the agent out. Passwords and passphrases are
never asked for: workers start non-interactively, and a key protected by a
passphrase is skipped as OpenSSH skips it in ``BatchMode`` (its agent copy, if
any, is used). When no key works, the error lists every key tried and why.
"""

from __future__ import annotations

import os
from typing import Any

from .deadline import Deadline
from .errors import SSHLaunchError
from .hostconfig import HostSettings

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def _load_keys(settings: HostSettings, notes: list[str]) -> list[tuple[str, Any]]:
    import paramiko

    keys: list[tuple[str, Any]] = []
    for path in settings.identity_files or tuple(os.path.expanduser(p) for p in DEFAULT_IDENTITIES):
        if not os.path.isfile(path):
            if settings.identity_files:
                notes.append(f"identity file {path} does not exist")
            continue
        try:
            key = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                notes.append(f"cannot load {path}: {exc}")
                continue
            # as OpenSSH in batch mode: a key that needs its passphrase is skipped, the others are tried
            notes.append(f"{path} is protected by a passphrase: skipped (add it to ssh-agent to use it)")
            continue
        except (paramiko.SSHException, OSError, ValueError) as exc:
            notes.append(f"cannot load {path}: {exc}")
            continue
        keys.append((path, key))
    if settings.identities_only:
        notes.append("ssh-agent not asked (IdentitiesOnly yes)")
    elif not os.environ.get("SSH_AUTH_SOCK"):
        notes.append("no ssh-agent (SSH_AUTH_SOCK is not set)")
    else:
        try:
            agent_keys = list(paramiko.Agent().get_keys())
        except paramiko.SSHException as exc:
            notes.append(f"ssh-agent: {exc}")
        else:
            keys += [("ssh-agent", key) for key in agent_keys]
            if not agent_keys:
                notes.append("ssh-agent holds no key")
    return keys


def authenticate(transport: Any, settings: HostSettings, deadline: Deadline) -> None:
    """Log in as ``settings.user`` within ``deadline``; :class:`SSHLaunchError` (phase ``auth``)
    naming every key tried, and why each failed, if none works."""
    import paramiko

    notes: list[str] = []
    keys = _load_keys(settings, notes)
    for source, key in keys:
        transport.auth_timeout = deadline.left()
        try:
            transport.auth_publickey(settings.user, key)
        except paramiko.AuthenticationException as exc:
            if "timeout" in str(exc).lower():
                raise SSHLaunchError(
                    settings.label, "auth", f"no answer to the login within {deadline.seconds:g} s"
                ) from exc
            notes.append(f"{key.get_name()} key {key.fingerprint} ({source}) was refused")
            continue
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHLaunchError(settings.label, "auth", f"the server closed the connection: {exc}") from exc
        if transport.is_authenticated():
            return
    tried = "; ".join(notes) or "no identity file was found"
    raise SSHLaunchError(
        settings.label, "auth", f"no key was accepted for user {settings.user!r}; tried: {tried}; give one with -i FILE"
    )
