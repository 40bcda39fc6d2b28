"""The garbage collector: objects whose every owner (by ownerReferences uid) is gone are deleted."""

from __future__ import annotations

import logging
from typing import Any

from .api import Api
from .errors import ApiError
from .store import Change, Store

log = logging.getLogger(__name__)
Obj = dict[str, Any]
DEPENDENT_RESOURCES = ("pods", "secrets", "serviceaccounts")
_OWNER_RESOURCES = {"Pod": "pods", "Secret": "secrets", "ServiceAccount": "serviceaccounts"}


class GarbageCollector:
    """Reacts to deletions (cascade) and to new objects whose owner does not exist."""

    def __init__(self, store: Store, api: Api) -> None:
        self.store, self.api = store, api

    def on_change(self, ch: Change) -> None:
        """Collect dependents of a removed object; collect a new object born without its owner."""
        if ch.type == "DELETED":
            uid = ch.obj["metadata"].get("uid")
            for resource in DEPENDENT_RESOURCES:
                for obj in self.store.snapshot(resource, ch.namespace)[0]:
                    if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                        self._collect(resource, ch.namespace, obj)
        elif ch.type == "ADDED" and ch.resource in DEPENDENT_RESOURCES and ch.obj["metadata"].get("ownerReferences"):
            self._collect(ch.resource, ch.namespace, ch.obj)

    def _owner_exists(self, namespace: str, ref: Obj) -> bool:
        resource = _OWNER_RESOURCES.get(ref.get("kind", "")) if ref.get("apiVersion") == "v1" else None
        if resource is None:
            return True  # a kind this server does not serve (e.g. a Job): assume it exists
        owner = self.store.get(resource, namespace, ref.get("name", ""))
        return owner is not None and owner["metadata"]["uid"] == ref.get("uid")

    def _collect(self, resource: str, namespace: str, obj: Obj) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        alive = [r for r in refs if self._owner_exists(namespace, r)]
        name = obj["metadata"]["name"]
        if alive == refs:
            return
        try:
            if alive:
                self.api.patch(
                    resource, namespace, name, {"metadata": {"ownerReferences": alive}}, "application/merge-patch+json"
                )
            else:
                log.debug("garbage-collecting %s %s/%s", resource, namespace, name)
                self.api.delete(resource, namespace, name, {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.code != 404:
                raise
