"""clustercore-k8s: workers as Kubernetes pods, through the official ``kubernetes`` client."""

from .errors import K8sError, K8sLaunchError, PodWarning
from .manager import K8sManager

__all__ = ["K8sError", "K8sLaunchError", "K8sManager", "PodWarning"]
