"""Host key checking against known_hosts, as OpenSSH's ``StrictHostKeyChecking`` does it.

``yes`` (the default here; OpenSSH's ``ask`` is treated as ``yes``): an unknown
or changed key is an error. ``accept-new``: an unknown key is accepted and
appended to the first user known_hosts file; a changed one is an error.
``no``: anything is accepted (a changed key is logged as a warning).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .errors import SSHLaunchError
from .hostconfig import HostSettings

log = logging.getLogger(__name__)


def load_known_hosts(settings: HostSettings) -> Any:
    """All known_hosts entries that apply to this host (user files, then global ones)."""
    from paramiko.hostkeys import HostKeys

    keys = HostKeys()
    for path in (*settings.known_hosts_files, *settings.global_known_hosts_files):
        if os.path.isfile(path):
            try:
                keys.load(path)
            except OSError as exc:
                log.warning("cannot read known_hosts file %s: %s", path, exc)
    return keys


def preferred_key_types(settings: HostSettings, known: Any, offered: tuple[str, ...]) -> tuple[str, ...]:
    """Offer the key types known for this host first, so a known key is the one negotiated."""
    entry = known.lookup(settings.known_hosts_name) or {}
    return tuple(sorted(offered, key=lambda kind: kind not in entry))


def verify_host_key(settings: HostSettings, known: Any, key: Any) -> None:
    """Raise :class:`SSHLaunchError` (phase ``host key``) unless ``key`` is acceptable."""
    name = settings.known_hosts_name
    entry = known.lookup(name) or {}
    files = ", ".join(settings.known_hosts_files + settings.global_known_hosts_files) or "(none)"
    expected = entry.get(key.get_name())
    if expected is not None and expected == key:
        return
    if expected is not None:
        text = (
            f"the {key.get_name()} host key of {name} does not match the one in known_hosts ({files}); "
            "it changed, or someone is in the middle. Remove the old entry if the change is expected"
        )
        if settings.strict == "no":
            log.warning("%s (StrictHostKeyChecking=no: connecting anyway)", text)
            return
        raise SSHLaunchError(settings.label, "host key", text)
    if settings.strict == "yes":
        raise SSHLaunchError(
            settings.label,
            "host key",
            f"the host key of {name} ({key.get_name()} {key.fingerprint}) is not in known_hosts ({files}). "
            f"Add it (ssh-keyscan -p {settings.port} {settings.hostname} >> ~/.ssh/known_hosts, after checking "
            "it), or opt out with sshflags=('-o', 'StrictHostKeyChecking=accept-new') or '=no'",
        )
    if settings.strict == "accept-new" and settings.known_hosts_files:
        _append(settings.known_hosts_files[0], name, key)


def _append(path: str, name: str, key: Any) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with open(path, "a", encoding="ascii") as f:
            f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        log.info("added the host key of %s to %s", name, path)
    except OSError as exc:
        log.warning("could not add the host key of %s to %s: %s", name, path, exc)
