"""clustercore-slurm: workers as the tasks of one Slurm ``srun`` step.

``addprocs("slurm", ntasks=4, partition="debug")`` on a login node (srun
asks for an allocation), or ``addprocs("slurm")`` in an sbatch script or an
salloc shell (one step over the allocation's tasks).
"""

from .errors import SlurmError
from .manager import SlurmManager

__all__ = ["SlurmError", "SlurmManager"]
