"""Name and label format checks; each returns the API server's error detail, or ``""`` when valid."""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
_QUALIFIED = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_CONFIG_KEY = r"[-._a-zA-Z0-9]+"


def dns1123_label(value: str) -> str:
    """Namespace and container names."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not re.fullmatch(_LABEL, value):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start"
            " and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation"
            f" is '{_LABEL}')"
        )
    return ""


def dns1123_subdomain(value: str) -> str:
    """Pod, Secret and ServiceAccount names."""
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not re.fullmatch(_SUBDOMAIN, value):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and"
            " must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation"
            f" is '{_SUBDOMAIN}')"
        )
    return ""


def qualified_name(value: str) -> str:
    """Label and annotation keys: ``[prefix/]name``."""
    prefix, _, name = value.rpartition("/")
    if "/" in value and (not prefix or dns1123_subdomain(prefix)):
        return "prefix part " + (dns1123_subdomain(prefix) or "must be non-empty")
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not re.fullmatch(_QUALIFIED, name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
            " alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is"
            f" '{_QUALIFIED}')"
        )
    return ""


def label_value(value: str) -> str:
    """Label values (may be empty)."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not re.fullmatch(_LABEL_VALUE, value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must"
            " start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used"
            f" for validation is '{_LABEL_VALUE}')"
        )
    return ""


def config_key(value: str) -> str:
    """Secret data keys and ``secretKeyRef.key``."""
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not re.fullmatch(_CONFIG_KEY, value):
        return (
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or"
            f" 'KEY_NAME',  or 'key-name', regex used for validation is '{_CONFIG_KEY}')"
        )
    return ""


def env_var_name(value: str) -> str:
    """Environment variable names (relaxed validation, GA since Kubernetes 1.34)."""
    if not value or "=" in value or not all(" " <= c <= "~" for c in value):
        return "a valid environment variable name must consist only of printable ASCII characters other than '='"
    return ""
