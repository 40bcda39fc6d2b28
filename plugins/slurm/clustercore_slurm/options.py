"""Checks for ``SlurmManager``'s options; each returns the normalised value or raises ``ValueError``.

They run in ``__post_init__``, before anything talks to Slurm, so a typo
fails at the call site instead of as a job that never starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

_TIME = re.compile(r"\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}|\d+-\d{1,2}:\d{1,2}|\d+-\d{1,2}:\d{1,2}:\d{1,2}")
_NODES = re.compile(r"(\d+)(?:-(\d+))?")
_MEMORY = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
_NAME_LIST = re.compile(r"[\w.+-]+(,[\w.+-]+)*")
_GRES_ITEM = r"[\w.-]+(:[\w.-]+){0,2}"
_GRES = re.compile(f"{_GRES_ITEM}(,{_GRES_ITEM})*")

# srun flags that would break how the plugin talks to the tasks (stdio, labels, dry runs)
_RESERVED_LONG = ("--input", "--output", "--error", "--pty", "--test-only", "--multi-prog", "--unbuffered")
_RESERVED_SHORT = ("-i", "-o", "-e", "-u")


def positive_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


def seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number of seconds (or None), not {value!r}")
    return float(value)


def slurm_time(value: Any) -> str | None:
    """``time``: minutes (int), a ``timedelta``, or a Slurm time string (``"1-02:00:00"``)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        total = math.ceil(value.total_seconds())
        if total < 1:
            raise ValueError(f"time must be positive, not {value!r}")
        days, rest = divmod(total, 86400)
        return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"time must be a positive number of minutes, not {value!r}")
        return str(value)
    if isinstance(value, str) and (_TIME.fullmatch(value) or value.upper() in ("UNLIMITED", "INFINITE")):
        return value
    raise ValueError(
        f"time must be minutes (int), a timedelta, or a Slurm time such as '30', '1:30:00' or '2-00:00:00'; "
        f"not {value!r}"
    )


def node_count(value: Any) -> str | None:
    """``nodes``: an int or a ``"min-max"`` range."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return str(value)
    if isinstance(value, str):
        match = _NODES.fullmatch(value)
        if match and int(match[1]) >= 1 and (match[2] is None or int(match[2]) >= int(match[1])):
            return value
    raise ValueError(f"nodes must be a positive int or a 'min-max' range such as '2-4', not {value!r}")


def memory(value: Any) -> str | None:
    """``mem_per_cpu``: megabytes (int) or a size with a K/M/G/T suffix (``"4G"``)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return str(value)
    if isinstance(value, str) and _MEMORY.fullmatch(value) and int(value.rstrip("KMGTkmgt")) >= 1:
        return value
    raise ValueError(f"mem_per_cpu must be megabytes (int) or a size such as '4G' or '500M', not {value!r}")


def names(name: str, value: Any) -> str | None:
    """A Slurm name or comma-separated list of names (partition, account, qos)."""
    if value is None:
        return None
    if isinstance(value, str) and _NAME_LIST.fullmatch(value):
        return value
    raise ValueError(f"{name} must be a name (or comma-separated names) without spaces, not {value!r}")


def gres(value: Any) -> str | None:
    """``gres``: ``"gpu"``, ``"gpu:2"``, ``"gpu:a100:2"``, comma-separated."""
    if value is None:
        return None
    if isinstance(value, str) and _GRES.fullmatch(value):
        return value
    raise ValueError(f"gres must look like 'gpu:2' or 'gpu:a100:1,nic:1', not {value!r}")


def text(name: str, value: Any) -> str | None:
    """Free text Slurm takes as one argument (job name, constraint): no control characters."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value
    raise ValueError(f"{name} must be a non-empty printable string, not {value!r}")


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def optional_flag(name: str, value: Any) -> bool | None:
    return None if value is None else flag(name, value)


def srun_flags(value: Any) -> tuple[str, ...]:
    """Extra srun arguments, passed through; ones that would break the task I/O are refused."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"srun_flags must be a list of strings such as ['--exclusive'], not {value!r}")
    flags = tuple(value)
    for item in flags:
        if not isinstance(item, str) or not item.isprintable():
            raise ValueError(f"srun_flags must hold printable strings, not {item!r}")
        reserved = (
            item.split("=", 1)[0] in _RESERVED_LONG
            if item.startswith("--")
            else any(item.startswith(short) for short in _RESERVED_SHORT)
        )
        if reserved:
            raise ValueError(f"srun_flags may not contain {item!r}: the plugin owns srun's stdio, labels and dry runs")
    return flags
