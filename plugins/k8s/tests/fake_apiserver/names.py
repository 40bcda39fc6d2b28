"""Name and label format checks; each returns the API server's error detail, or ``""`` when valid."""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"


def _check(value: str, limit: int, pattern: str, explanation: str) -> str:
    """The API server's two checks on a name: its length, then its form."""
    if len(value) > limit:
        return f"must be no more than {limit} characters"
    if not re.fullmatch(pattern, value):
        return f"{explanation}, regex used for validation is '{pattern}')"
    return ""


def dns1123_label(value: str) -> str:
    """Namespace and container names."""
    return _check(
        value,
        63,
        _LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start"
        " and end with an alphanumeric character (e.g. 'my-name',  or '123-abc'",
    )


def dns1123_subdomain(value: str) -> str:
    """Pod, Secret and ServiceAccount names."""
    return _check(
        value,
        253,
        _SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and"
        " must start and end with an alphanumeric character (e.g. 'example.com'",
    )


def qualified_name(value: str) -> str:
    """Label and annotation keys: ``[prefix/]name``."""
    prefix, _, name = value.rpartition("/")
    if "/" in value and (not prefix or dns1123_subdomain(prefix)):
        return "prefix part " + (dns1123_subdomain(prefix) or "must be non-empty")
    if not name:
        return "name part must be non-empty"
    problem = _check(
        name,
        63,
        _QUALIFIED,
        "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
        " alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc'",
    )
    return "name part " + problem if problem else ""


def label_value(value: str) -> str:
    """Label values (may be empty)."""
    return _check(
        value,
        63,
        _LABEL_VALUE,
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must"
        " start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345'",
    )


def config_key(value: str) -> str:
    """Secret data keys and ``secretKeyRef.key``."""
    return _check(
        value,
        253,
        _CONFIG_KEY,
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or"
        " 'KEY_NAME',  or 'key-name'",
    )


def env_var_name(value: str) -> str:
    """Environment variable names (relaxed validation, GA since Kubernetes 1.34)."""
    if not value or "=" in value or not all(" " <= c <= "~" for c in value):
        return "a valid environment variable name must consist only of printable ASCII characters other than '='"
    return ""
