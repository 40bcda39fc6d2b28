"""API errors rendered as Kubernetes ``Status`` objects, with real messages.

``ApiError`` carries an HTTP code and a ``Status`` body; ``FieldError`` is one
validation failure, formatted like ``k8s.io/apimachinery/pkg/util/validation/field``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_FIELD_TYPES = {  # type -> (cause reason, text); value-carrying types show the value
    "Required": ("FieldValueRequired", "Required value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "TooLong": ("FieldValueTooLong", "Too long"),
}
_WITH_VALUE = {"Invalid", "NotSupported", "Duplicate"}


def go_repr(value: Any) -> str:
    """Render a value the way Go's ``%q``/``%v`` would in a field error."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldError:
    """One validation error on a field path."""

    type: str
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        """The message without the field path (a ``StatusCause.message``)."""
        text = _FIELD_TYPES[self.type][1]
        if self.type in _WITH_VALUE:
            text = f"{text}: {go_repr(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def not_supported(field: str, value: Any, allowed: list[str]) -> FieldError:
    """An ``Unsupported value`` error listing the allowed values."""
    return FieldError("NotSupported", field, value, "supported values: " + ", ".join(json.dumps(a) for a in allowed))


class ApiError(Exception):
    """An error response: ``code`` plus a ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        """The ``Status`` object the real API server would send."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(resource: str, name: str) -> ApiError:
    """``<resource> "<name>" not found``."""
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource})


def already_exists(resource: str, name: str) -> ApiError:
    """``<resource> "<name>" already exists``."""
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', {"name": name, "kind": resource})


def conflict(resource: str, name: str, why: str) -> ApiError:
    """An optimistic-concurrency or precondition failure."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        {"name": name, "kind": resource},
    )


def invalid(kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 ``<Kind> "<name>" is invalid: ...`` with one cause per field error."""
    joined = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    causes = [{"reason": _FIELD_TYPES[e.type][0], "message": e.body(), "field": e.field} for e in errors]
    return ApiError(
        422, "Invalid", f'{kind} "{name}" is invalid: {joined}', {"name": name, "kind": kind, "causes": causes}
    )


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


def forbidden(resource: str, name: str, why: str) -> ApiError:
    """403 Forbidden (admission refusals)."""
    return ApiError(403, "Forbidden", f'{resource} "{name}" is forbidden: {why}', {"name": name, "kind": resource})


def gone(message: str) -> ApiError:
    """410 Expired (a watch from a compacted resourceVersion)."""
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    """405 for a verb this server does not serve on a path."""
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


def no_route() -> ApiError:
    """404 for an unknown path."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def unauthorized() -> ApiError:
    """401 for a missing or wrong bearer token."""
    return ApiError(401, "Unauthorized", "Unauthorized")
