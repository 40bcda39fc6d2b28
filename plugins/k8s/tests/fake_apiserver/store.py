"""The object store: objects keyed by (resource, namespace, name), one global
resourceVersion counter, and the change log that watches and controllers read."""

from __future__ import annotations

import bisect
import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import already_exists, gone

Obj = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """One write, as a watch sees it; ``prev`` is the object before it (``None`` for ADDED)."""

    rv: int
    type: str
    resource: str
    namespace: str
    obj: Obj
    prev: Obj | None


class Store:
    """Thread-safe objects plus a bounded change log (older entries are "compacted")."""

    def __init__(self, history: int = 50_000) -> None:
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._log: list[Change] = []
        self._max = history
        self._rv = 0
        self._compacted = 0  # the log no longer holds changes at or below this rv
        self._floor = 0  # client watches older than this get 410 (see ``compact``)
        self.closed = False

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        return self._rv

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        """A copy of one object, or ``None``."""
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def snapshot(self, resource: str, namespace: str | None = None) -> tuple[list[Obj], int]:
        """Copies of all objects of a resource (in one namespace, or all), sorted by key, and the current rv."""
        with self._lock:
            keys = sorted(k for k in self._objects if k[0] == resource and namespace in (None, k[1]))
            return [copy.deepcopy(self._objects[k]) for k in keys], self._rv

    def create(self, resource: str, namespace: str, obj: Obj) -> Obj:
        """Insert a new object; 409 AlreadyExists if the name is taken."""
        name = obj["metadata"]["name"]
        with self._lock:
            if (resource, namespace, name) in self._objects:
                raise already_exists(resource, name)
            return self._write("ADDED", resource, namespace, name, copy.deepcopy(obj), None)

    def update(self, resource: str, namespace: str, name: str, mutate: Callable[[Obj], bool | None]) -> Obj | None:
        """Apply ``mutate`` to a copy and store it (unless it returns ``False``); ``None`` if absent."""
        with self._lock:
            old = self._objects.get((resource, namespace, name))
            if old is None:
                return None
            new = copy.deepcopy(old)
            if mutate(new) is False or new == old:
                return copy.deepcopy(old)
            return self._write("MODIFIED", resource, namespace, name, new, old)

    def remove(self, resource: str, namespace: str, name: str) -> Obj | None:
        """Delete an object for good (emits DELETED); ``None`` if it was not there."""
        with self._lock:
            old = self._objects.get((resource, namespace, name))
            if old is None:
                return None
            return self._write("DELETED", resource, namespace, name, copy.deepcopy(old), old)

    def _write(self, kind: str, resource: str, namespace: str, name: str, obj: Obj, prev: Obj | None) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if kind == "DELETED":
            del self._objects[(resource, namespace, name)]
        else:
            self._objects[(resource, namespace, name)] = obj
        self._log.append(Change(self._rv, kind, resource, namespace, copy.deepcopy(obj), prev))
        if len(self._log) > self._max:
            drop = len(self._log) // 2
            self._compacted = self._log[drop - 1].rv
            del self._log[:drop]
        self._cond.notify_all()
        return copy.deepcopy(obj)

    def changes(self, after: int, timeout: float, internal: bool = False) -> list[Change] | None:
        """Changes with rv > ``after``, waiting up to ``timeout`` for one; ``None`` once closed.

        Raises 410 Expired when ``after`` predates the retained log, like a compacted etcd
        (``internal`` readers, the controllers, are exempt from ``compact``).
        """
        with self._cond:
            for attempt in (0, 1):
                if self.closed:
                    return None
                oldest = self._compacted if internal else max(self._compacted, self._floor)
                if after < oldest:
                    raise gone(f"too old resource version: {after} ({oldest + 1})")
                start = bisect.bisect_right(self._log, after, key=lambda c: c.rv)
                if start < len(self._log) or attempt:
                    return self._log[start:]
                self._cond.wait(timeout)
            return []

    def compact(self) -> None:
        """Make every client watch from an older resourceVersion fail with 410 Gone."""
        with self._lock:
            self._floor = self._rv

    def close(self) -> None:
        """Wake and end every watcher."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
