"""The plugin's one exception: Slurm refused or failed to run the workers (its message included)."""

from __future__ import annotations


class SlurmError(RuntimeError):
    """Slurm rejected the request, or the step ended before its workers were ready."""
