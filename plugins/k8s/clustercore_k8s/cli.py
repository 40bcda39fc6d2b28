"""``clustercore k8s cleanup``: remove the pods and Secrets a driver left behind, by label.

A driver that exits normally removes its pods and cookie Secret; one that
was killed outside a pod (so without ownerReferences) leaves them. This
deletes everything labelled ``app.kubernetes.io/managed-by=clustercore`` in
a namespace (or every namespace), optionally only one cluster's. Run it
when no driver is using them.
"""

from __future__ import annotations

import argparse
import sys

from . import podspec
from .errors import K8sError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clustercore k8s", description="Kubernetes tools of clustercore.")
    commands = parser.add_subparsers(dest="command", required=True)
    cleanup = commands.add_parser("cleanup", help="delete leftover worker pods and cookie Secrets")
    where = cleanup.add_mutually_exclusive_group()
    where.add_argument("--namespace", "-n", help="namespace (default: the current context's, like kubectl)")
    where.add_argument("--all-namespaces", "-A", action="store_true", help="look in every namespace")
    cleanup.add_argument("--cluster-id", help="only this cluster's objects (label clustercore.io/cluster)")
    cleanup.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)")
    cleanup.add_argument("--context", help="kubeconfig context")
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    args = parser.parse_args(argv)
    try:
        return _cleanup(args)
    except K8sError as exc:
        print(f"clustercore k8s cleanup: {exc}", file=sys.stderr)
        return 1


def _cleanup(args: argparse.Namespace) -> int:
    from .kubeapi import KubeApi, load_connection

    api = KubeApi(load_connection(args.kubeconfig, args.context), args.namespace)
    namespace = "*" if args.all_namespaces else api.namespace
    selector = podspec.cluster_selector(args.cluster_id)
    verb = "would delete" if args.dry_run else "deleted"
    try:
        pods, _ = api.list_pods(selector, namespace)
        found = [("pod", p) for p in pods] + [("secret", s) for s in api.list_secrets(selector, namespace)]
        for kind, obj in found:
            meta = obj["metadata"]
            if not args.dry_run:
                delete = api.delete_pod if kind == "pod" else api.delete_secret
                delete(meta["name"], namespace=meta["namespace"])  # type: ignore[operator]
            cluster = (meta.get("labels") or {}).get(podspec.LABEL_CLUSTER, "?")
            print(f"{verb} {kind} {meta['namespace']}/{meta['name']} (cluster {cluster})")
        if not found:
            where = "any namespace" if namespace == "*" else f"namespace {namespace}"
            print(f"nothing to clean up in {where}")
    finally:
        api.close()
    return 0
