"""The three PATCH flavours: JSON merge patch, strategic merge patch (common subset), JSON patch."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request

# Lists merged by key under strategic merge patch (patchMergeKey in the Kubernetes types).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "conditions": "type",
}
MERGED_SETS = {"finalizers"}  # primitive lists with patchStrategy=merge
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_list(key: str, target: list[Any], patch: list[Any]) -> list[Any]:
    if key in MERGED_SETS:
        return list(target) + [v for v in patch if v not in target]
    merge_key = MERGE_KEYS.get(key)
    if not merge_key or not all(isinstance(v, dict) for v in [*target, *patch]):
        return copy.deepcopy(patch)
    result = [copy.deepcopy(v) for v in target]
    for item in patch:
        idx = next((i for i, v in enumerate(result) if v.get(merge_key) == item.get(merge_key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
        elif idx is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[idx] = strategic_merge_patch(result[idx], item)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch plus list merging by key, ``$patch: delete`` and ``$deleteFromPrimitiveList``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _walk(doc: Any, pointer: str) -> tuple[Any, str | int]:
    """The container holding ``pointer``'s last token, and that token."""
    if not pointer.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: invalid path {pointer!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    for token in tokens[:-1]:
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    last: str | int = tokens[-1]
    if isinstance(doc, list):
        last = len(doc) if last == "-" else int(last)
    return doc, last


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902 (add, remove, replace, test, copy, move)."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            if kind in ("copy", "move"):
                src, key = _walk(doc, op["from"])
                value = copy.deepcopy(src[key])
                if kind == "move":
                    del src[key]
                kind, op = "add", {**op, "value": value}
            parent, key = _walk(doc, path)
            if kind == "add":
                if isinstance(parent, list):
                    parent.insert(key, op["value"])  # type: ignore[arg-type]
                else:
                    parent[key] = op["value"]
            elif kind == "remove":
                del parent[key]
            elif kind == "replace":
                parent[key]
                parent[key] = op["value"]
            elif kind == "test":
                if parent[key] != op["value"]:
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: testing value {path} failed",
                    )
            else:
                raise bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(
                422, "Invalid", f"the server rejected our request due to an error in our request: {exc!r}"
            ) from None
    return doc


def apply(target: Any, body: Any, content_type: str) -> Any:
    """Apply a PATCH body according to its Content-Type; ``target`` is left untouched."""
    kind = content_type.split(";")[0].strip()
    target = copy.deepcopy(target)  # the mergers share unpatched sub-objects with their input
    if kind == "application/merge-patch+json":
        return merge_patch(target, body)
    if kind == "application/strategic-merge-patch+json":
        return strategic_merge_patch(target, body)
    if kind == "application/json-patch+json":
        return json_patch(target, body)
    raise ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json,"
        f" application/merge-patch+json, application/strategic-merge-patch+json ({kind!r} given)",
    )
