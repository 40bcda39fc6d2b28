"""A container's environment and argv: ``env``/``envFrom`` resolution (Secrets, fieldRef,
resourceFieldRef) and ``$(VAR)`` expansion, failing like kubelet's CreateContainerConfigError."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from . import names, secrets
from .quantity import parse_quantity

Obj = dict[str, Any]
_REF = re.compile(r"\$\$|\$\(([^)]*)\)")


class ConfigError(Exception):
    """The container cannot be configured yet (e.g. ``secret "x" not found``)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, unknown refs stay."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def _field(pod: Obj, path: str) -> str:
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path):
        return str((pod["metadata"].get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((pod["metadata"].get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    if path in ("status.podIPs", "status.hostIPs"):
        return ",".join(i["ip"] for i in pod["status"].get(path.split(".")[1], []))
    section, key = path.split(".", 1)
    return str(pod.get(section, {}).get(key, ""))


def _resource(container: Obj, ref: Obj, allocatable: dict[str, Any]) -> str:
    kind, res = ref["resource"].split(".", 1)
    value = (container.get("resources") or {}).get(kind, {}).get(res)
    if value is None:
        value = allocatable.get(res, 0)
    return str(math.ceil(parse_quantity(value) / parse_quantity(ref.get("divisor") or "1")))


def _secret_value(get_secret: Callable[[str], Obj | None], ns: str, ref: Obj) -> str | None:
    secret = get_secret(ref["name"])
    if secret is None:
        if ref.get("optional"):
            return None
        raise ConfigError(f'secret "{ref["name"]}" not found')
    values = secrets.decode(secret)
    if ref["key"] not in values:
        if ref.get("optional"):
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
    return values[ref["key"]]


def resolve(
    pod: Obj,
    container: Obj,
    get_secret: Callable[[str], Obj | None],
    allocatable: dict[str, Any],
) -> tuple[dict[str, str], list[str]]:
    """The variables the container declares, and its expanded argv (``command`` + ``args``)."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            if not src["configMapRef"].get("optional"):
                raise ConfigError(f'configmap "{src["configMapRef"]["name"]}" not found')
            continue
        ref = src["secretRef"]
        secret = get_secret(ref["name"])
        if secret is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'secret "{ref["name"]}" not found')
        for key, text in secrets.decode(secret).items():
            if not names.env_var_name(src.get("prefix", "") + key):
                env[src.get("prefix", "") + key] = text
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = expand(var.get("value", ""), env)
            continue
        value: str | None
        if "secretKeyRef" in source:
            value = _secret_value(get_secret, ns, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            if not source["configMapKeyRef"].get("optional"):
                raise ConfigError(f'configmap "{source["configMapKeyRef"]["name"]}" not found')
            value = None
        elif "fieldRef" in source:
            value = _field(pod, source["fieldRef"]["fieldPath"])
        else:
            value = _resource(container, source["resourceFieldRef"], allocatable)
        if value is not None:
            env[var["name"]] = value
    argv = [expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    return env, argv
