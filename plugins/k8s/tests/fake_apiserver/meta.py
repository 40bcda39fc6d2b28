"""ObjectMeta: names, generateName, labels, annotations, ownerReferences, finalizers,
and the fields the server owns (uid, timestamps, resourceVersion)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from typing import Any

from . import names
from .errors import FieldError

Obj = dict[str, Any]
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's utilrand alphabet
SYSTEM_FIELDS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


def now(delta: float = 0.0) -> str:
    """An RFC 3339 timestamp (second precision, like ``metav1.Time``)."""
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delta)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate_name(prefix: str) -> str:
    """``generateName`` + 5 random characters, the prefix cut to fit 63 characters."""
    return prefix[:58] + "".join(random.choices(_GENERATE_ALPHABET, k=5))


def _labels(field: str, labels: Any, check_values: bool) -> list[FieldError]:
    errors = []
    for key, value in (labels or {}).items():
        if err := names.qualified_name(key):
            errors.append(FieldError("Invalid", field, key, err))
        if not isinstance(value, str):
            errors.append(FieldError("Invalid", f"{field}[{key}]", value, "must be a string"))
        elif check_values and (err := names.label_value(value)):
            errors.append(FieldError("Invalid", field, value, err))
    return errors


def _owner_references(refs: Any) -> list[FieldError]:
    errors, controllers = [], 0
    for ref in refs or []:
        for key, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid")):
            if not ref.get(key):
                errors.append(FieldError("Invalid", f"metadata.ownerReferences.{key}", "", f"{what} must not be empty"))
        controllers += bool(ref.get("controller"))
    if controllers > 1:
        errors.append(
            FieldError(
                "Invalid", "metadata.ownerReferences", refs, "Only one reference can have Controller set to true"
            )
        )
    return errors


def validate(meta: Obj, name_check: Callable[[str], str]) -> list[FieldError]:
    """Checks shared by every kind (the name itself included)."""
    errors: list[FieldError] = []
    name = meta.get("name")
    if not name:
        errors.append(FieldError("Required", "metadata.name", detail="name or generateName is required"))
    elif err := name_check(name):
        errors.append(FieldError("Invalid", "metadata.name", name, err))
    errors += _labels("metadata.labels", meta.get("labels"), check_values=True)
    errors += _labels("metadata.annotations", meta.get("annotations"), check_values=False)
    errors += _owner_references(meta.get("ownerReferences"))
    for i, fin in enumerate(meta.get("finalizers") or []):
        if err := names.qualified_name(fin):
            errors.append(FieldError("Invalid", f"metadata.finalizers[{i}]", fin, err))
    return errors


def prepare_create(obj: Obj, namespace: str, name_check: Callable[[str], str]) -> list[FieldError]:
    """Fill server-owned metadata on a new object in place; return validation errors."""
    meta = obj.setdefault("metadata", {})
    errors: list[FieldError] = []
    prefix = meta.get("generateName")
    if prefix and not meta.get("name"):
        masked = prefix[:-1] + "a" if prefix.endswith("-") else prefix  # the server tolerates a trailing dash
        if err := name_check(masked):
            errors.append(FieldError("Invalid", "metadata.generateName", prefix, err))
        meta["name"] = generate_name(prefix)
    for key in (*SYSTEM_FIELDS, "resourceVersion", "selfLink", "managedFields"):
        meta.pop(key, None)
    if namespace:
        meta["namespace"] = namespace
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    return errors + validate(meta, name_check)


def keep_system_fields(new: Obj, old: Obj) -> None:
    """On update, the server-owned metadata stays as it was."""
    meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
    for key in (*SYSTEM_FIELDS, "namespace", "generateName"):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)


def new_finalizers(new: Obj, old: Obj) -> list[FieldError]:
    """No finalizer may be added once deletion started."""
    if not old["metadata"].get("deletionTimestamp"):
        return []
    added = set(new["metadata"].get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
    if added:
        return [
            FieldError(
                "Forbidden",
                "metadata.finalizers",
                detail="no new finalizers can be added if the object is being deleted",
            )
        ]
    return []
