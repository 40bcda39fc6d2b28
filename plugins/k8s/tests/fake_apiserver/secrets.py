"""Secret normalization (``stringData`` folded into base64 ``data``) and validation."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from . import names
from .errors import FieldError, bad_request

Obj = dict[str, Any]
MAX_SIZE = 1024 * 1024


def normalize(secret: Obj) -> None:
    """Check ``data`` is base64 (400 otherwise, as the decoder does) and merge ``stringData`` into it."""
    data = secret.get("data") or {}
    string_data = secret.pop("stringData", None) or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise bad_request('Secret in version "v1" cannot be handled as a Secret: data and stringData must be objects')
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key}]: {exc}'
            ) from None
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data
    secret.setdefault("type", "Opaque")


def decode(secret: Obj) -> dict[str, str]:
    """The secret's values as text."""
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.get("data") or {}).items()}


def validate(secret: Obj, old: Obj | None = None) -> list[FieldError]:
    """Keys must be config keys; at most 1 MiB; immutable secrets keep their data."""
    errors, size = [], 0
    for key, value in (secret.get("data") or {}).items():
        if err := names.config_key(key):
            errors.append(FieldError("Invalid", f"data[{key}]", key, err))
        size += len(base64.b64decode(value))
    if size > MAX_SIZE:
        errors.append(FieldError("TooLong", "data", detail=f"may not be more than {MAX_SIZE} bytes"))
    if old is not None:
        if secret.get("type") != old.get("type"):
            errors.append(FieldError("Invalid", "type", secret.get("type"), "field is immutable"))
        if old.get("immutable"):
            if secret.get("data") != old.get("data"):
                errors.append(FieldError("Forbidden", "data", detail="field is immutable when `immutable` is set"))
            if not secret.get("immutable"):
                errors.append(FieldError("Forbidden", "immutable", detail="field is immutable when `immutable` is set"))
    return errors
