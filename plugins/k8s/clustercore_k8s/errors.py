"""The plugin's exceptions and warnings.

Exception tree::

    RuntimeError
     +-- K8sError                 the API server refused a request (its Status message included)
          +-- K8sLaunchError      too few worker pods started (each pod's reason included)
    RuntimeWarning
     +-- PodWarning               a worker pod was given up on (stuck Pending, failed to start)

Bad ``K8sManager`` arguments raise the builtin ``ValueError``/``TypeError``.
"""

from __future__ import annotations


class K8sError(RuntimeError):
    """The Kubernetes API server refused or failed a request the plugin made."""


class K8sLaunchError(K8sError):
    """Fewer worker pods started than ``min_workers`` (default 1); the message says why each did not."""


class PodWarning(RuntimeWarning):
    """A worker pod was deleted without becoming a worker; the cluster continues without it."""
