"""Recording core/v1 Events about objects, deduplicated the way kubelet's recorder does (``count``)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from .meta import now
from .store import Store

Obj = dict[str, Any]


class Recorder:
    """Creates Events; a repeat of the same (object, reason, message) bumps ``count`` instead."""

    def __init__(self, store: Store, node: str) -> None:
        self._store, self._node = store, node
        self._lock = threading.Lock()
        self._names: dict[tuple[str, ...], str] = {}

    def record(
        self, obj: Obj, type_: str, reason: str, message: str, component: str = "kubelet", field_path: str = ""
    ) -> None:
        """Emit (or bump) one Event about ``obj``."""
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        key = (meta["uid"], type_, reason, message, component, field_path)
        with self._lock:
            name = self._names.get(key)
            bump = lambda e: e.update(count=e.get("count", 1) + 1, lastTimestamp=now())  # noqa: E731
            if name and self._store.update("events", ns, name, bump) is not None:
                return
            stamp, name = now(), f"{meta['name']}.{time.time_ns():x}"
            involved = {
                "kind": obj.get("kind", "Pod"),
                "namespace": ns,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
                "resourceVersion": meta.get("resourceVersion", ""),
            }
            if field_path:
                involved["fieldPath"] = field_path
            host = self._node if component == "kubelet" else ""
            event = {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": stamp},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": component, **({"host": host} if host else {})},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": type_,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host,
            }
            self._store.create("events", ns, event)
            self._names[key] = name
