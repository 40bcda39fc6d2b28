"""clustercore-ssh: clustercore workers on remote hosts over SSH (Julia's ``SSHManager``).

``clustercore.addprocs(["host1", ("user@host2", 4)], tunnel=False, sshflags=(), max_parallel=10)``
or ``clustercore.addprocs(SSHManager(machines=[...]))``. See the README.
"""

from __future__ import annotations

from .errors import SSHLaunchError
from .machinefile import parse_machine_file
from .manager import SSHManager
from .spec import MachineSpec, parse_machines, parse_spec

__all__ = ["MachineSpec", "SSHLaunchError", "SSHManager", "parse_machine_file", "parse_machines", "parse_spec"]
