"""The scheduler: binds Pending pods to the one fake node if its nodeSelector and resource
requests fit, else records ``FailedScheduling`` and retries when capacity frees up."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import podspec
from .events import Recorder
from .meta import now
from .quantity import parse_quantity
from .store import Change, Store

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Node:
    """The single node every pod is scheduled to (or not)."""

    name: str = "fake-node"
    ip: str = "127.0.0.1"
    labels: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, str] = field(default_factory=lambda: {"cpu": "8", "memory": "16Gi", "pods": "110"})

    def __post_init__(self) -> None:
        base = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        self.labels = {**base, **self.labels}


def set_condition(status: Obj, type_: str, value: bool, reason: str = "", message: str = "") -> None:
    """Set a pod condition, keeping ``lastTransitionTime`` unless its status flips."""
    conditions = status.setdefault("conditions", [])
    new = {"type": type_, "status": "True" if value else "False", "lastProbeTime": None}
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    for i, cond in enumerate(conditions):
        if cond["type"] == type_:
            same = cond["status"] == new["status"]
            new["lastTransitionTime"] = cond.get("lastTransitionTime") if same else now()
            conditions[i] = new
            return
    new["lastTransitionTime"] = now()
    conditions.append(new)


class Scheduler:
    """Reacts to pod changes from the store."""

    def __init__(self, store: Store, recorder: Recorder, node: Node) -> None:
        self.store, self.recorder, self.node = store, recorder, node

    def on_change(self, ch: Change) -> None:
        """Schedule new pods; retry unschedulable ones when a pod ends or goes away."""
        if ch.resource != "pods":
            return
        if ch.type == "ADDED" and not ch.obj["spec"].get("nodeName"):
            self._schedule(ch.obj)
        elif ch.type == "DELETED" or (
            ch.obj["status"].get("phase") in TERMINAL and (ch.prev or {}).get("status", {}).get("phase") not in TERMINAL
        ):
            for pod in self.store.snapshot("pods")[0]:
                if not pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp"):
                    self._schedule(pod)

    def _why_not(self, pod: Obj) -> str:
        """Empty if the pod fits, else the scheduler's message."""
        selector = pod["spec"].get("nodeSelector") or {}
        if any(self.node.labels.get(k) != v for k, v in selector.items()):
            return (
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes"
                " are available: 1 Preemption is not helpful for scheduling."
            )
        used: dict[str, Decimal] = {"pods": Decimal(0)}
        for other in self.store.snapshot("pods")[0]:
            if other["spec"].get("nodeName") == self.node.name and other["status"].get("phase") not in TERMINAL:
                used["pods"] += 1
                for name, value in podspec.requests_of(other).items():
                    used[name] = used.get(name, Decimal(0)) + value
        wanted = {**podspec.requests_of(pod), "pods": Decimal(1)}
        short = sorted(
            name
            for name, value in wanted.items()
            if value > 0 and used.get(name, Decimal(0)) + value > parse_quantity(self.node.allocatable.get(name, "0"))
        )
        if not short:
            return ""
        reasons = ", ".join("1 Too many pods" if n == "pods" else f"1 Insufficient {n}" for n in short)
        return (
            f"0/1 nodes are available: {reasons}. preemption: 0/1 nodes are available: 1 No preemption victims"
            " found for incoming pod."
        )

    def _schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        why, applied = self._why_not(pod), []

        def update(p: Obj) -> bool:
            if p["metadata"]["uid"] != meta["uid"] or p["spec"].get("nodeName"):
                return False
            if why:
                set_condition(p["status"], "PodScheduled", False, "Unschedulable", why)
            else:
                p["spec"]["nodeName"] = self.node.name
                set_condition(p["status"], "PodScheduled", True)
            applied.append(True)
            return True

        updated = self.store.update("pods", meta["namespace"], meta["name"], update)
        if updated is None or not applied:
            return
        if why:
            self.recorder.record(updated, "Warning", "FailedScheduling", why, component="default-scheduler")
        else:
            msg = f"Successfully assigned {meta['namespace']}/{meta['name']} to {self.node.name}"
            self.recorder.record(updated, "Normal", "Scheduled", msg, component="default-scheduler")
