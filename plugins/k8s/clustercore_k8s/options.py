"""Checks for ``K8sManager``'s options; each returns the normalised value or raises.

Bad types raise ``TypeError``, bad values ``ValueError``. They run in
``__post_init__``, before anything talks to the API server, and follow the
API server's own rules (names, labels, quantities) so that a typo fails at
the call site instead of as a 422 after the cookie Secret was created.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_QUANTITY = re.compile(r"(?P<num>\d+(\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s: Decimal(2) ** (10 * (i + 1)) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TRANSPORTS = ("auto", "pod-ip", "port-forward")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_TAINT_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Resource:
    """One resource's request and limit as Kubernetes quantities (``None``: not set)."""

    request: str | None
    limit: str | None


def positive_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def seconds(name: str, value: Any) -> float | None:
    """A positive number of seconds, or ``None`` (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number of seconds (or None), not {value!r}")
    return float(value)


def text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if not value.strip() or value != value.strip():
        raise ValueError(f"{name} must be a non-empty string without surrounding spaces, not {value!r}")
    return value


def image(value: Any) -> str | None:
    value = text("image", value)
    if value is not None and any(c.isspace() for c in value):
        raise ValueError(f"image must not contain whitespace: {value!r}")
    return value


def dns_label(name: str, value: Any) -> str | None:
    """A namespace (RFC 1123 label: lower-case alphanumerics and '-', at most 63)."""
    value = text(name, value)
    if value is not None and (len(value) > 63 or not _DNS_LABEL.fullmatch(value)):
        raise ValueError(
            f"{name} must be an RFC 1123 label (lower-case letters, digits and '-', starting and ending "
            f"with a letter or digit, at most 63 characters), not {value!r}"
        )
    return value


def dns_subdomain(name: str, value: Any) -> str | None:
    """A ServiceAccount (or Secret, Pod) name: RFC 1123 subdomain, at most 253."""
    checked = text(name, value)
    if checked is not None and (len(checked) > 253 or not _DNS_SUBDOMAIN.fullmatch(checked)):
        raise ValueError(f"{name} must be an RFC 1123 subdomain (lower-case, '-', '.'), not {value!r}")
    return checked


def label_key(where: str, key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where}: keys must be strings, not {type(key).__name__}")
    prefix, _, name = key.rpartition("/")
    bad_prefix = "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))
    if bad_prefix or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"{where}: {key!r} is not a valid label key ([prefix/]name; name at most 63 characters of "
            "alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)"
        )
    return key


def label_value(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}[{key!r}] must be a string, not {type(value).__name__} ({value!r})")
    if value and (len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
        raise ValueError(
            f"{where}[{key!r}] = {value!r} is not a valid label value (at most 63 alphanumerics, '-', '_' "
            "and '.', starting and ending with an alphanumeric)"
        )
    return value


def labels(name: str, value: Any, reserved_prefix: str = "") -> dict[str, str] | None:
    """A label map (also used for ``node_selector``); keys under ``reserved_prefix`` are the plugin's."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of strings, not {type(value).__name__}")
    checked = {label_key(name, k): label_value(name, k, v) for k, v in value.items()}
    if reserved_prefix:
        taken = sorted(k for k in checked if k.startswith(reserved_prefix))
        if taken:
            raise ValueError(f"{name}: {', '.join(taken)} belong to clustercore (prefix {reserved_prefix!r})")
    return checked


def env(value: Any, reserved: Sequence[str] = ()) -> dict[str, str] | None:
    """Environment variables for the worker containers: names to string values."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"env must be a dict of environment variables, not {type(value).__name__}")
    checked: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"env: {key!r} is not a valid environment variable name")
        if key in reserved:
            raise ValueError(f"env: {key} is set by clustercore and cannot be given")
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            raise TypeError(f"env[{key!r}] must be a string (or number), not {type(val).__name__}")
        checked[key] = str(val)
    return checked


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity (``"500m"``, ``"1.5Gi"``, ``"2e3"``) as a number; ``ValueError`` if malformed."""
    match = _QUANTITY.fullmatch(value)
    if not match:
        raise ValueError(value)
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["num"])
        if suffix[:1] in ("e", "E"):
            return number * Decimal(10) ** int(suffix[1:])
    except InvalidOperation:
        raise ValueError(value) from None
    return number * _SUFFIX[suffix]


def _quantity(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(f"{name} must be a Kubernetes quantity such as '500m' or '2Gi', not {type(value).__name__}")
    textual = value if isinstance(value, str) else format(Decimal(str(value)), "f")
    try:
        amount = parse_quantity(textual)
    except ValueError:
        hint = " (Kubernetes writes gigabytes as 'G' and gibibytes as 'Gi')" if textual.lower().endswith("b") else ""
        raise ValueError(
            f"{name} must be a Kubernetes quantity such as '500m', '2' or '4Gi', not {value!r}{hint}"
        ) from None
    if amount <= 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return textual


def resource(name: str, value: Any) -> Resource:
    """``cpu``/``memory``: one quantity (request = limit), or a ``(request, limit)`` pair (either may be None)."""
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{name} must be a quantity or a (request, limit) pair, not {value!r}")
        request, limit = _quantity(f"{name} request", value[0]), _quantity(f"{name} limit", value[1])
        if request is not None and limit is not None and parse_quantity(request) > parse_quantity(limit):
            raise ValueError(f"{name}: the request {request} is larger than the limit {limit}")
        return Resource(request, limit)
    single = _quantity(name, value)
    return Resource(single, single)


def pull_policy(value: Any) -> str | None:
    if value is None:
        return None
    if value not in PULL_POLICIES:
        raise ValueError(f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}, not {value!r}")
    return str(value)


def transport(value: Any) -> str:
    if value not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {value!r}")
    return str(value)


def tolerations(value: Any, to_dict: Callable[[Any], Any]) -> list[dict[str, Any]] | None:
    """A list of tolerations as dicts (camelCase, as in YAML) or ``V1Toleration`` objects."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise TypeError("tolerations must be a list of tolerations (dicts or V1Toleration)")
    checked = []
    for i, item in enumerate(value):
        tol = to_dict(item)
        where = f"tolerations[{i}]"
        if not isinstance(tol, Mapping):
            raise TypeError(f"{where} must be a dict or a V1Toleration, not {type(item).__name__}")
        unknown = set(tol) - _TOLERATION_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown fields {', '.join(sorted(unknown))} (use camelCase, as in YAML)")
        operator = tol.get("operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            raise ValueError(f"{where}: operator must be 'Equal' or 'Exists', not {operator!r}")
        if operator == "Exists" and tol.get("value"):
            raise ValueError(f"{where}: a value must be empty when the operator is 'Exists'")
        if not tol.get("key") and operator != "Exists":
            raise ValueError(f"{where}: the operator must be 'Exists' when the key is empty")
        if tol.get("key"):
            label_key(where, tol["key"])
        if (tol.get("effect") or "") not in _TAINT_EFFECTS:
            raise ValueError(f"{where}: effect must be one of {', '.join(e for e in _TAINT_EFFECTS if e)}")
        seconds_ = tol.get("tolerationSeconds")
        if seconds_ is not None and (isinstance(seconds_, bool) or not isinstance(seconds_, int)):
            raise TypeError(f"{where}: tolerationSeconds must be an int")
        checked.append({k: v for k, v in tol.items() if v is not None})
    return checked


def pod_template(value: Any) -> Any:
    """A pod manifest: a dict (camelCase, as in YAML) or a ``V1Pod``; checked for shape only."""
    if value is None:
        return None
    if not isinstance(value, Mapping) and not callable(getattr(value, "to_dict", None)):
        raise TypeError(f"pod_template must be a dict (a pod manifest) or a V1Pod, not {type(value).__name__}")
    if isinstance(value, Mapping):
        for key in ("metadata", "spec"):
            if value.get(key) is not None and not isinstance(value[key], Mapping):
                raise TypeError(f"pod_template[{key!r}] must be a dict")
        containers = (value.get("spec") or {}).get("containers")
        if containers is not None and (
            not isinstance(containers, Sequence) or not all(isinstance(c, Mapping) for c in containers)
        ):
            raise TypeError("pod_template['spec']['containers'] must be a list of dicts")
    return value


def callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable (pod -> pod) or None, not {type(value).__name__}")
    return value


def path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a path, not {type(value).__name__}")
    return str(os.fspath(value))
