"""The engine: one process group's state and everything that moves its messages.

The process group (:mod:`.cluster`), message handling, call running, remote
references and their distributed GC, membership, the worker's side
(:mod:`.worker`) and the cluster-manager interface with its plugin hooks.
It uses :mod:`clustercore.links` and :mod:`clustercore.wire` and never the
user API above it: what the API must hear of (a worker left) reaches it
through listeners it registers.
"""
