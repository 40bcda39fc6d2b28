"""Pod defaulting and validation (create and update), for the fields a cluster manager uses."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from . import names
from .errors import FieldError, bad_request, not_supported
from .quantity import parse_quantity

Obj = dict[str, Any]
RESTART_POLICIES = ["Always", "Never", "OnFailure"]
PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]
FIELD_PATHS = [
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
]
RESOURCE_FIELDS = [f"{k}.{r}" for k in ("limits", "requests") for r in ("cpu", "ephemeral-storage", "memory")]
_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)
_DEFAULT_TOLERATIONS = [
    {"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
    for k in ("not-ready", "unreachable")
]


def _decode_error(what: str) -> Exception:
    return bad_request(f'Pod in version "v1" cannot be handled as a Pod: {what}')


def _check_shapes(pod: Obj) -> None:
    """Type errors the real server reports while decoding JSON (400, not 422)."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise _decode_error("spec must be an object")
    if not isinstance(spec.get("containers", []), list) or not all(
        isinstance(c, dict) for c in spec.get("containers", [])
    ):
        raise _decode_error("spec.containers must be a list of objects")
    for c in spec.get("containers", []):
        for key in ("command", "args"):
            if not isinstance(c.get(key, []), list) or not all(isinstance(a, str) for a in c.get(key, [])):
                raise _decode_error(
                    f"json: cannot unmarshal into Go struct field Container.spec.containers.{key} of type []string"
                )
        for kind in ("limits", "requests"):
            for value in ((c.get("resources") or {}).get(kind) or {}).values():
                try:
                    parse_quantity(value)
                except ValueError as exc:
                    raise _decode_error(str(exc)) from None


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or untagged images, else ``IfNotPresent`` (the server's default)."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def requests_of(pod: Obj) -> dict[str, Decimal]:
    """Total resource requests of a pod's containers."""
    total: dict[str, Decimal] = {}
    for c in pod["spec"]["containers"]:
        for name, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(value)
    return total


def _qos(containers: list[Obj]) -> str:
    res = [c.get("resources") or {} for c in containers]
    if not any((r.get(k) or {}).get(n) for r in res for k in ("limits", "requests") for n in ("cpu", "memory")):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(n) is not None
        and parse_quantity((r.get("limits") or {})[n]) == parse_quantity((r.get("requests") or {}).get(n, "0"))
        for r in res
        for n in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def default(pod: Obj) -> None:
    """Apply the API server's defaults in place (after the shape check)."""
    _check_shapes(pod)
    spec = pod["spec"]
    for key, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("securityContext", {}),
        ("enableServiceLinks", True),
        ("priority", 0),
        ("preemptionPolicy", "PreemptLowerPriority"),
    ):
        spec.setdefault(key, value)
    spec["serviceAccountName"] = spec["serviceAccount"] = (
        spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    )
    spec["tolerations"] = list(spec.get("tolerations") or []) + [
        t for t in _DEFAULT_TOLERATIONS if not any(u.get("key") == t["key"] for u in spec.get("tolerations") or [])
    ]
    for c in spec.get("containers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        if isinstance(c.get("image"), str):
            c.setdefault("imagePullPolicy", image_pull_policy(c["image"]))
        res = c.setdefault("resources", {})
        if res.get("limits"):
            res["requests"] = {**res["limits"], **(res.get("requests") or {})}
        for port in c.get("ports") or []:
            port.setdefault("protocol", "TCP")
        for env in c.get("env") or []:
            if (env.get("valueFrom") or {}).get("fieldRef"):
                env["valueFrom"]["fieldRef"].setdefault("apiVersion", "v1")
    pod["status"] = {"phase": "Pending", "qosClass": _qos(spec.get("containers", []))}


def _resources(path: str, res: Obj) -> list[FieldError]:
    errors = []
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    for kind, values in (("limits", limits), ("requests", requests)):
        for name, value in values.items():
            field = f"{path}.resources.{kind}[{name}]"
            if (
                name not in ("cpu", "memory", "ephemeral-storage")
                and not name.startswith("hugepages-")
                and "/" not in name
            ):
                errors.append(FieldError("Invalid", field, name, "must be a standard resource type or fully qualified"))
            elif parse_quantity(value) < 0:
                errors.append(FieldError("Invalid", field, str(value), "must be greater than or equal to 0"))
    for name, value in requests.items():
        if name in limits and parse_quantity(value) > parse_quantity(limits[name]):
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.resources.requests",
                    str(value),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    return errors


def _env_source(path: str, src: Obj) -> list[FieldError]:
    kinds = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef") if src.get(k)]
    if len(kinds) != 1:
        detail = (
            "may not have more than one field specified at a time"
            if kinds
            else "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
        )
        return [FieldError("Invalid", path, "", detail)]
    kind, ref = kinds[0], src[kinds[0]]
    sub = f"{path}.{kind}"
    if kind == "fieldRef":
        fp = ref.get("fieldPath", "")
        if not fp:
            return [FieldError("Required", f"{sub}.fieldPath")]
        if fp not in FIELD_PATHS and not fp.startswith(("metadata.labels[", "metadata.annotations[")):
            return [not_supported(f"{sub}.fieldPath", fp, FIELD_PATHS)]
        return []
    if kind == "resourceFieldRef":
        if ref.get("resource") not in RESOURCE_FIELDS:
            return [not_supported(f"{sub}.resource", ref.get("resource", ""), RESOURCE_FIELDS)]
        return []
    errors = [] if ref.get("name") else [FieldError("Required", f"{sub}.name")]
    if not ref.get("key"):
        errors.append(FieldError("Required", f"{sub}.key"))
    elif err := names.config_key(ref["key"]):
        errors.append(FieldError("Invalid", f"{sub}.key", ref["key"], err))
    return errors


def _container(path: str, c: Obj) -> list[FieldError]:
    errors: list[FieldError] = []
    name, image = c.get("name"), c.get("image")
    if not name:
        errors.append(FieldError("Required", f"{path}.name"))
    elif err := names.dns1123_label(name):
        errors.append(FieldError("Invalid", f"{path}.name", name, err))
    if not image:
        errors.append(FieldError("Required", f"{path}.image"))
    elif image != image.strip():
        errors.append(FieldError("Invalid", f"{path}.image", image, "must not have leading or trailing whitespace"))
    if c.get("imagePullPolicy") not in PULL_POLICIES and image:
        errors.append(not_supported(f"{path}.imagePullPolicy", c.get("imagePullPolicy"), PULL_POLICIES))
    for i, port in enumerate(c.get("ports") or []):
        p = port.get("containerPort")
        if not p:
            errors.append(FieldError("Required", f"{path}.ports[{i}].containerPort"))
        elif not isinstance(p, int) or not 1 <= p <= 65535:
            errors.append(
                FieldError("Invalid", f"{path}.ports[{i}].containerPort", p, "must be between 1 and 65535, inclusive")
            )
        if port.get("protocol") not in PROTOCOLS:
            errors.append(not_supported(f"{path}.ports[{i}].protocol", port.get("protocol"), PROTOCOLS))
    for i, env in enumerate(c.get("env") or []):
        ep = f"{path}.env[{i}]"
        if not env.get("name"):
            errors.append(FieldError("Required", f"{ep}.name"))
        elif err := names.env_var_name(env["name"]):
            errors.append(FieldError("Invalid", f"{ep}.name", env["name"], err))
        if env.get("valueFrom") is not None:
            if env.get("value"):
                errors.append(
                    FieldError("Invalid", f"{ep}.valueFrom", "", "may not be specified when `value` is not empty")
                )
            else:
                errors += _env_source(f"{ep}.valueFrom", env["valueFrom"])
    for i, src in enumerate(c.get("envFrom") or []):
        refs = [k for k in ("configMapRef", "secretRef") if src.get(k) is not None]
        if len(refs) != 1:
            errors.append(
                FieldError("Invalid", f"{path}.envFrom[{i}]", "", "must specify one of: `configMapRef` or `secretRef`")
            )
        elif not src[refs[0]].get("name"):
            errors.append(FieldError("Required", f"{path}.envFrom[{i}].{refs[0]}.name"))
    return errors + _resources(path, c.get("resources") or {})


def validate(pod: Obj) -> list[FieldError]:
    """Spec validation after defaulting."""
    spec, errors = pod["spec"], []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(FieldError("Required", "spec.containers"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        errors += _container(f"spec.containers[{i}]", c)
        if c.get("name") in seen:
            errors.append(FieldError("Duplicate", f"spec.containers[{i}].name", c["name"]))
        seen.add(c.get("name", ""))
    if spec["restartPolicy"] not in RESTART_POLICIES:
        errors.append(not_supported("spec.restartPolicy", spec["restartPolicy"], RESTART_POLICIES))
    for key, value in (spec.get("nodeSelector") or {}).items():
        if err := names.qualified_name(key) or names.label_value(str(value)):
            errors.append(FieldError("Invalid", "spec.nodeSelector", key, err))
    if err := names.dns1123_subdomain(spec["serviceAccountName"]):
        errors.append(FieldError("Invalid", "spec.serviceAccountName", spec["serviceAccountName"], err))
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and not (isinstance(ads, int) and 1 <= ads <= 2147483647):
        errors.append(
            FieldError("Invalid", "spec.activeDeadlineSeconds", ads, "must be between 1 and 2147483647, inclusive")
        )
    for i, t in enumerate(spec.get("tolerations") or []):
        if t.get("operator", "Equal") not in ("Equal", "Exists"):
            errors.append(not_supported(f"spec.tolerations[{i}].operator", t["operator"], ["Equal", "Exists"]))
        if t.get("effect") and t["effect"] not in ("NoExecute", "NoSchedule", "PreferNoSchedule"):
            errors.append(
                not_supported(
                    f"spec.tolerations[{i}].effect", t["effect"], ["NoExecute", "NoSchedule", "PreferNoSchedule"]
                )
            )
    return errors


def validate_update(new: Obj, old: Obj) -> list[FieldError]:
    """Pods are nearly immutable: only images, activeDeadlineSeconds and added tolerations may change."""
    _check_shapes(new)
    spec, old_spec = copy.deepcopy(new["spec"]), old["spec"]
    if len(spec.get("containers", [])) == len(old_spec["containers"]):
        for c, oc in zip(spec["containers"], old_spec["containers"], strict=True):
            if c.get("image"):
                c["image"] = oc["image"]
    for key in ("activeDeadlineSeconds",):
        spec.pop(key, None)
        if key in old_spec:
            spec[key] = old_spec[key]
    if all(t in (spec.get("tolerations") or []) for t in old_spec.get("tolerations") or []):
        spec["tolerations"] = old_spec.get("tolerations")
    if spec != old_spec:
        return [FieldError("Forbidden", "spec", detail=_UPDATE_FORBIDDEN)]
    return [
        FieldError("Required", f"spec.containers[{i}].image")
        for i, c in enumerate(new["spec"]["containers"])
        if not c.get("image")
    ]
