"""A strict fake Kubernetes API server (core/v1 Pods, Secrets, Events, port-forward) whose
pods run as local processes, for testing clustercore's K8s cluster manager with the real
``kubernetes`` client. See README.md for what it covers and how real clusters differ."""

from .scheduler import Node
from .server import FakeApiServer, InClusterFiles

__all__ = ["FakeApiServer", "InClusterFiles", "Node"]
