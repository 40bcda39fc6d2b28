"""Public-key authentication: identity files, then the SSH agent, as OpenSSH orders them.

Identity files come from ``-i`` and ``IdentityFile``; without any, the
default ``~/.ssh/id_ed25519``, ``id_ecdsa`` and ``id_rsa`` are tried.
``IdentitiesOnly yes`` leaves the agent out. Passwords are never asked for:
workers start non-interactively (OpenSSH's ``BatchMode``).
"""

from __future__ import annotations

import os
from typing import Any

from .errors import SSHLaunchError
from .hostconfig import HostSettings

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def _load_keys(settings: HostSettings, notes: list[str]) -> list[Any]:
    import paramiko

    keys: list[Any] = []
    for path in settings.identity_files or tuple(os.path.expanduser(p) for p in DEFAULT_IDENTITIES):
        if not os.path.isfile(path):
            if settings.identity_files:
                notes.append(f"identity file {path} does not exist")
            continue
        try:
            keys.append(paramiko.PKey.from_path(path))
        except paramiko.PasswordRequiredException:
            notes.append(f"{path} is protected by a passphrase (load it into ssh-agent)")
        except (paramiko.SSHException, OSError, ValueError) as exc:
            notes.append(f"cannot load {path}: {exc}")
    if not settings.identities_only:
        try:
            keys.extend(paramiko.Agent().get_keys())
        except paramiko.SSHException as exc:
            notes.append(f"ssh-agent: {exc}")
    return keys


def authenticate(transport: Any, settings: HostSettings) -> None:
    """Log in as ``settings.user``; :class:`SSHLaunchError` (phase ``auth``) if no key works."""
    import paramiko

    notes: list[str] = []
    keys = _load_keys(settings, notes)
    for key in keys:
        try:
            transport.auth_publickey(settings.user, key)
        except paramiko.AuthenticationException:
            notes.append(f"{key.get_name()} key {key.fingerprint} was refused")
            continue
        except paramiko.SSHException as exc:
            raise SSHLaunchError(settings.label, "auth", f"the server closed the connection: {exc}") from exc
        if transport.is_authenticated():
            return
    tried = "; ".join(notes) or "no identity file or agent key was found"
    raise SSHLaunchError(
        settings.label, "auth", f"no key was accepted for user {settings.user!r} ({tried}); give one with -i FILE"
    )
