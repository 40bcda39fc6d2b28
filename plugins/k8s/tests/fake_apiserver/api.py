"""The API verbs (create, get, list, patch, delete, deletecollection) on the served resources,
with defaulting, validation, admission and deletion semantics; no HTTP here."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import meta, names, patch, podspec, secrets, selectors
from .errors import ApiError, bad_request, conflict, forbidden, invalid, method_not_allowed, not_found, not_supported
from .store import Store

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Kind:
    """How one resource is served."""

    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    name_check: Callable[[str], str] = names.dns1123_subdomain
    short: tuple[str, ...] = ()


_RW = ("create", "delete", "deletecollection", "get", "list", "patch", "watch")
KINDS = {
    "namespaces": Kind(
        "Namespace", "namespace", False, ("create", "get", "list", "watch"), names.dns1123_label, ("ns",)
    ),
    "pods": Kind("Pod", "pod", True, _RW, short=("po",)),
    "secrets": Kind("Secret", "secret", True, _RW),
    "serviceaccounts": Kind("ServiceAccount", "serviceaccount", True, _RW, short=("sa",)),
    "events": Kind("Event", "event", True, ("get", "list", "watch"), short=("ev",)),
}


def kind_of(resource: str, verb: str) -> Kind:
    """The served kind, or 404/405 like the real server."""
    if resource not in KINDS:
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
    if verb not in KINDS[resource].verbs:
        raise method_not_allowed()
    return KINDS[resource]


def _dry_run(opts: Obj) -> bool:
    value = opts.get("dryRun")
    values = value if isinstance(value, list) else [value] if value else []
    for v in values:
        if v != "All":
            raise invalid("DeleteOptions", "", [not_supported("dryRun", v, ["All"])])
    return bool(values)


class Api:
    """Resource verbs over a ``Store``; controllers react to the changes these make."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads -------------------------------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str) -> Obj:
        """One object (404 if absent, also in an unknown namespace)."""
        kind_of(resource, "get")
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return obj

    def list(self, resource: str, namespace: str | None, query: dict[str, str]) -> Obj:
        """A ``<Kind>List``; unknown namespaces list as empty, like the real server."""
        kind = kind_of(resource, "list")
        match = selectors.parse_both(resource, query)
        objects, rv = self.store.snapshot(resource, namespace)
        items = [o for o in objects if match(o)]
        list_meta: Obj = {"resourceVersion": str(rv)}
        if token := query.get("continue"):
            try:
                after = json.loads(base64.urlsafe_b64decode(token))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: invalid continue token") from None
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after]
        limit = int(query.get("limit") or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            start = [last.get("namespace", ""), last["name"]]
            list_meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start}).encode()).decode()
            list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return {"kind": f"{kind.kind}List", "apiVersion": "v1", "metadata": list_meta, "items": items}

    # -- create ------------------------------------------------------------------------------------
    def create(self, resource: str, namespace: str, body: Any, opts: Obj | None = None) -> Obj:
        """Default, validate, admit and store a new object."""
        kind = kind_of(resource, "create")
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request(f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: expected an object')
        if body.get("kind") not in (None, "", kind.kind) or body.get("apiVersion") not in (None, "", "v1"):
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the expected API version (v1)"
                if body.get("apiVersion") not in (None, "", "v1")
                else f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: kind {body.get("kind")!r}'
            )
        obj = copy.deepcopy(body)
        if kind.namespaced:
            given = obj.get("metadata", {}).get("namespace")
            if given and given != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if self.store.get("namespaces", "", namespace) is None:
                raise not_found("namespaces", namespace)
        obj["kind"], obj["apiVersion"] = kind.kind, "v1"
        errors = meta.prepare_create(obj, namespace if kind.namespaced else "", kind.name_check)
        if resource == "pods":
            podspec.default(obj)
            errors += podspec.validate(obj)
        elif resource == "secrets":
            secrets.normalize(obj)
            errors += secrets.validate(obj)
        elif resource == "namespaces":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj["spec"], obj["status"] = {"finalizers": ["kubernetes"]}, {"phase": "Active"}
        name = obj["metadata"].get("name", "")
        if errors:
            raise invalid(kind.kind, name, errors)
        if resource == "pods":
            sa = obj["spec"]["serviceAccountName"]
            if self.store.get("serviceaccounts", namespace, sa) is None:
                why = f'error looking up service account {namespace}/{sa}: serviceaccount "{sa}" not found'
                raise forbidden("pods", name, why)
        if _dry_run(opts or {}):
            return obj
        for _attempt in range(5):
            try:
                created = self.store.create(resource, obj["metadata"].get("namespace", ""), obj)
                break
            except ApiError as exc:
                if exc.code != 409 or not body.get("metadata", {}).get("generateName") or body["metadata"].get("name"):
                    raise
                obj["metadata"]["name"] = meta.generate_name(body["metadata"]["generateName"])
        if resource == "namespaces":
            self.create("serviceaccounts", name, {"metadata": {"name": "default"}})
        return created

    # -- patch -------------------------------------------------------------------------------------
    def patch(
        self, resource: str, namespace: str, name: str, body: Any, content_type: str, opts: Obj | None = None
    ) -> Obj:
        """Apply a merge / strategic-merge / JSON patch, then validate the result as an update."""
        kind = kind_of(resource, "patch")
        for _attempt in range(5):
            old = self.get(resource, namespace, name)
            new = patch.apply(old, body, content_type)
            if not isinstance(new, dict) or not isinstance(new.get("metadata"), dict):
                raise bad_request("the patch produced an object without metadata")
            if new["metadata"].get("name") != name:
                given = new["metadata"].get("name")
                raise bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")
            wanted_rv = new["metadata"].get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(
                    resource,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            meta.keep_system_fields(new, old)
            new["kind"], new["apiVersion"] = old["kind"], "v1"
            errors = meta.validate(new["metadata"], kind.name_check) + meta.new_finalizers(new, old)
            if resource == "pods":
                new["status"] = old["status"]
                errors += podspec.validate_update(new, old)
            elif resource == "secrets":
                secrets.normalize(new)
                errors += secrets.validate(new, old)
            if errors:
                raise invalid(kind.kind, name, errors)
            if _dry_run(opts or {}):
                return new
            rv: str = old["metadata"]["resourceVersion"]
            applied: list[bool] = []

            def replace(obj: Obj, new: Obj = new, rv: str = rv, applied: list[bool] = applied) -> bool:
                if obj["metadata"]["resourceVersion"] != rv:
                    return False  # changed meanwhile: patch again on top of the newer object
                obj.clear()
                obj.update(new)
                applied.append(True)
                return True

            stored = self.store.update(resource, namespace, name, replace)
            if stored is None:
                raise not_found(resource, name)
            if applied:
                return self.maybe_remove(resource, namespace, name) or stored
        raise conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )

    # -- delete ------------------------------------------------------------------------------------
    def delete(self, resource: str, namespace: str, name: str, opts: Obj) -> Obj:
        """Delete with grace (pods), finalizers, preconditions and propagation policy."""
        kind_of(resource, "delete")
        obj = self.get(resource, namespace, name)
        pre = opts.get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(key) and pre[key] != obj["metadata"].get(key):
                why = f"Precondition failed: {label} in precondition: {pre[key]}, {label} in object meta: "
                raise conflict(resource, name, why + str(obj["metadata"].get(key)))
        policy = opts.get("propagationPolicy") or "Background"
        if policy not in ("Foreground", "Background", "Orphan"):
            raise invalid(
                "DeleteOptions",
                "",
                [not_supported("propagationPolicy", policy, ["Foreground", "Background", "Orphan"])],
            )
        if _dry_run(opts):
            return obj
        if policy == "Orphan":
            self.orphan_dependents(namespace, obj["metadata"]["uid"])
        grace = 0
        if resource == "pods" and obj["spec"].get("nodeName") and obj["status"].get("phase") not in TERMINAL:
            requested = opts.get("gracePeriodSeconds")
            grace = int(obj["spec"].get("terminationGracePeriodSeconds", 30) if requested is None else requested)
        if grace > 0 or obj["metadata"].get("finalizers"):

            def mark(o: Obj) -> None:
                current = o["metadata"].get("deletionGracePeriodSeconds")
                if current is None or grace < current:
                    o["metadata"]["deletionTimestamp"] = meta.now(grace)
                    o["metadata"]["deletionGracePeriodSeconds"] = grace

            marked = self.store.update(resource, namespace, name, mark)
            removed = self.maybe_remove(resource, namespace, name)
            result = removed or marked
        else:
            result = self.store.remove(resource, namespace, name)
        if result is None:
            raise not_found(resource, name)
        if resource == "pods":
            return result
        details = {"name": name, "kind": resource, "uid": obj["metadata"]["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def delete_collection(self, resource: str, namespace: str, query: dict[str, str], opts: Obj) -> Obj:
        """Delete every matching object; returns the list of what was deleted."""
        kind_of(resource, "deletecollection")
        listed = self.list(resource, namespace, query)
        for item in listed["items"]:
            try:
                self.delete(resource, namespace, item["metadata"]["name"], opts)
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return listed

    def maybe_remove(self, resource: str, namespace: str, name: str, uid: str = "") -> Obj | None:
        """Finish a deletion once finalizers are gone and (pods) the kubelet has stopped the pod."""
        obj = self.store.get(resource, namespace, name)
        if obj is None or not obj["metadata"].get("deletionTimestamp") or obj["metadata"].get("finalizers"):
            return None
        if uid and obj["metadata"]["uid"] != uid:
            return None
        if resource == "pods" and obj["spec"].get("nodeName") and obj["status"].get("phase") not in TERMINAL:
            return None
        return self.store.remove(resource, namespace, name)

    def orphan_dependents(self, namespace: str, uid: str) -> None:
        """Drop ownerReferences to ``uid`` (propagationPolicy=Orphan)."""
        for resource in ("pods", "secrets", "serviceaccounts"):
            for obj in self.store.snapshot(resource, namespace)[0]:
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    self.store.update(resource, namespace, obj["metadata"]["name"], lambda o: _drop_owner(o, uid))


def _drop_owner(obj: Obj, uid: str) -> None:
    refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
    if refs:
        obj["metadata"]["ownerReferences"] = refs
    else:
        obj["metadata"].pop("ownerReferences", None)
