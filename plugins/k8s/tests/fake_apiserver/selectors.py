"""``labelSelector`` and ``fieldSelector`` query parameters: parsing and matching."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import names
from .errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

# Field selectors the real API server supports per resource (field -> path in the object).
FIELDS: dict[str, dict[str, str]] = {
    "pods": {
        f: f
        for f in (
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        )
    },
    "secrets": {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace", "type": "type"},
    "events": {
        f: f
        for f in (
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        )
    }
    | {"source": "source.component"},
}
_DEFAULT_FIELDS = {"metadata.name": "metadata.name", "metadata.namespace": "metadata.namespace"}

_KEY = r"[^\s=!(),]+"
_VALUE = r"[^\s=!(),]*"
_SET_OP = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQ_OP = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _check(key: str, values: list[str]) -> None:
    if err := names.qualified_name(key):
        raise bad_request(f'unable to parse requirement: key: Invalid value: "{key}": {err}')
    for v in values:
        if err := names.label_value(v):
            raise bad_request(f'unable to parse requirement: values: Invalid value: "{v}": {err}')


def _requirement(text: str) -> Matcher:
    if m := _SET_OP.match(text):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",")} - {""} if raw.strip() else set()
        if not values:
            raise bad_request(f"unable to parse requirement: for '{op}' operator, values set can't be empty")
        _check(key, sorted(values))
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_OP.match(text):
        key, op, value = m.groups()
        _check(key, [value])
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if m := _EXISTS.match(text):
        neg, key = m.groups()
        _check(key, [])
        return (lambda labels: key not in labels) if neg else (lambda labels: key in labels)
    raise bad_request(f"unable to parse requirement: found '{text.strip()}', expected: identifier or operator")


def label_selector(text: str | None) -> Matcher:
    """Compile a label selector; the matcher takes an object."""
    if not text or not text.strip():
        return lambda obj: True
    reqs = [_requirement(part) for part in _split_top_level(text)]
    return lambda obj: all(r(obj.get("metadata", {}).get("labels") or {}) for r in reqs)


def _lookup(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_selector(resource: str, text: str | None) -> Matcher:
    """Compile a field selector for ``resource``; unsupported fields are a 400 like the real server."""
    if not text or not text.strip():
        return lambda obj: True
    supported = FIELDS.get(resource, _DEFAULT_FIELDS)
    terms: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.groups()
        if field not in supported:
            raise bad_request(f"field label not supported: {field}")
        terms.append((supported[field], op == "!=", value))
    return lambda obj: all((_lookup(obj, path) == value) != negate for path, negate, value in terms)


def parse_both(resource: str, query: dict[str, str]) -> Matcher:
    """A matcher for both selectors found in ``query``."""
    labels = label_selector(query.get("labelSelector"))
    fields = field_selector(resource, query.get("fieldSelector"))
    return lambda obj: labels(obj) and fields(obj)
