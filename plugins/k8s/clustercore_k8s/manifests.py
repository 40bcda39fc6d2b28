"""Manifests as plain JSON-ready dicts (camelCase, as in YAML), whatever the user handed in.

Users may pass ``kubernetes.client`` model objects (``V1Pod``, ``V1Toleration``)
or dicts; the plugin works on dicts. Only a model object makes this import
``kubernetes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plain(obj: Any) -> Any:
    """A deep copy of ``obj`` with every ``kubernetes.client`` model turned into its JSON dict."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if callable(getattr(obj, "to_dict", None)):
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(obj)
    return obj
