"""One question to the remote Python per host and launch, asked while the workers start.

``EXENAME EXEFLAGS -c PROBE`` runs with the workers' ``dir`` and ``env`` and
answers on one line: its version, its CPU threads (for ``count="auto"``) and
whether it imports clustercore with the driver's protocol. A failure becomes
an :class:`SSHLaunchError` in phase ``python``, ``import`` or ``version``
instead of a worker that silently never prints its address.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clustercore.plugin import versions

from .connection import HostConnection
from .deadline import Deadline
from .errors import SSHLaunchError
from .remote_command import dir_failure

MARKER = "clustercore_ssh_probe:"
SCRIPT = """\
import json, os, sys
info = {"python": list(sys.version_info[:3]), "executable": sys.executable, "cpus": os.cpu_count() or 1}
try:
    import clustercore
    info["location"] = os.path.dirname(clustercore.__file__)
    info["release"] = getattr(clustercore, "__version__", "?")
    from clustercore.plugin import versions
    info["versions"] = list(versions())
except ImportError as exc:
    info["import_error" if "location" not in info else "old"] = type(exc).__name__ + ": " + str(exc)
except Exception as exc:
    info["import_error"] = type(exc).__name__ + ": " + str(exc)
print("MARKER" + json.dumps(info), flush=True)
""".replace("MARKER", MARKER)


@dataclass(frozen=True)
class ProbeResult:
    cpus: int
    python: tuple[int, ...]
    executable: str
    versions: tuple[int, ...]


def _describe(found: tuple[int, ...]) -> str:
    proto, major, minor = found
    return f"Python {major}.{minor} with clustercore protocol {proto}"


def parse_probe(host: str, exename: str, status: int, output: str, seconds: float) -> ProbeResult:
    """Turn the probe's exit status and output into a result, or the error it reveals."""
    cd_error = dir_failure(output)
    if cd_error is not None:
        raise SSHLaunchError(host, "dir", f"cannot change to the workers' dir: {cd_error}", output)
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    output = "\n".join(line for line in output.splitlines() if not line.startswith(MARKER))
    if not lines:
        if status == -1:
            raise SSHLaunchError(host, "python", f"{exename} did not answer within {seconds:g} s", output)
        hint = " (not found: set exename to the remote Python's path)" if status == 127 else ""
        raise SSHLaunchError(host, "python", f"cannot run {exename}: exit status {status}{hint}", output)
    info: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    python, mine = tuple(info["python"]), versions()
    if python[:2] != mine[1:]:
        raise SSHLaunchError(
            host,
            "version",
            f"{info['executable']} is Python {python[0]}.{python[1]} but the driver runs Python {mine[1]}.{mine[2]}; "
            "pickled functions do not travel between Python minor versions: use the same one on every host",
            output,
        )
    if "import_error" in info:
        raise SSHLaunchError(
            host,
            "import",
            f"{info['executable']} cannot import clustercore ({info['import_error']}); install clustercore on "
            "that host, or point exename at a Python that has it",
            output,
        )
    if "old" in info:  # a clustercore from before clustercore.plugin: another protocol, surely
        raise SSHLaunchError(
            host,
            "version",
            f"{info['executable']} has clustercore {info['release']} (at {info['location']}), older than the "
            f"driver's, which runs {_describe(mine)}; use the same clustercore on every host",
            output,
        )
    theirs = tuple(info["versions"])
    if theirs != mine:
        raise SSHLaunchError(
            host,
            "version",
            f"{info['executable']} runs {_describe(theirs)} but the driver runs {_describe(mine)}; "
            "use the same Python minor version and clustercore on every host",
            output,
        )
    return ProbeResult(int(info["cpus"]), python, info["executable"], theirs)


def probe(connection: HostConnection, command: str, exename: str, deadline: Deadline) -> ProbeResult:
    """Run the probe ``command`` (see :func:`probe_argv`) on ``connection``."""
    status, output = connection.run(command, deadline)
    return parse_probe(connection.label, exename, status, output, deadline.seconds)


def probe_argv(exename: str, exeflags: tuple[str, ...]) -> list[str]:
    return [exename, *exeflags, "-c", SCRIPT]
