"""Why a worker pod ended, or why it is still Pending, in one line a user can act on.

``termination_reason`` reads a pod's status (``pod cc-worker-ab12c OOMKilled
(exit code 137)``, ``pod ... Evicted: The node was low on resource: memory``);
``pending_reason`` prefers the newest Warning event (``FailedScheduling: 0/3
nodes are available: 3 Insufficient cpu``), then the pod's conditions and
container states.
"""

from __future__ import annotations

from typing import Any

from .podspec import CONTAINER

Obj = dict[str, Any]
TERMINAL_PHASES = ("Succeeded", "Failed")


def _worker_status(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return status  # type: ignore[no-any-return]
    return statuses[0] if statuses else {}


def termination_reason(pod: Obj, deleted: bool = False) -> str | None:
    """Why the pod has ended (or is being deleted); ``None`` while it lives."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    phase = status.get("phase")
    deleting = deleted or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    if phase not in TERMINAL_PHASES and not deleting:
        return None
    if phase == "Failed" and status.get("reason"):  # Evicted, DeadlineExceeded, NodeLost, ...
        message = (status.get("message") or "").strip()
        return f"pod {name} {status['reason']}" + (f": {message}" if message else "")
    terminated = (_worker_status(pod).get("state") or {}).get("terminated")
    if phase in TERMINAL_PHASES and terminated:
        text = f"pod {name} {terminated.get('reason') or phase} (exit code {terminated.get('exitCode')})"
        message = (terminated.get("message") or "").strip()
        return f"{text}: {message}" if message else text
    if deleting:
        return f"pod {name} was deleted"
    return f"pod {name} {phase}"


def pending_reason(pod: Obj, events: list[Obj]) -> str:
    """Why a pod has not started: its newest Warning event, else its status."""
    warnings = [e for e in events if e.get("type") == "Warning"]
    for event in reversed(warnings or events):
        if event.get("reason") or event.get("message"):
            return f"{event.get('reason', '')}: {(event.get('message') or '').strip()}".strip(": ")
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".strip(": ")
    waiting = (_worker_status(pod).get("state") or {}).get("waiting")
    if waiting:
        return f"{waiting.get('reason', 'Waiting')}: {waiting.get('message', '')}".strip(": ")
    return f"phase {status.get('phase', 'Pending')}, no events"
