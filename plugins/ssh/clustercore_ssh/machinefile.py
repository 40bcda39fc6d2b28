"""Julia's ``--machine-file`` format, for ``clustercore --machine-file FILE script.py``.

One machine per line: ``[count*][user@]host[:port] [bind_addr[:port]]``, with
``count`` a number or ``auto``. As an addition to Julia's format, blank lines
and lines starting with ``#`` are skipped. Errors name the file and line.
"""

from __future__ import annotations

import os
from typing import Any

from .spec import parse_spec


def parse_machine_file(path: str | os.PathLike[str]) -> list[Any]:
    """The machines list (``spec`` or ``(spec, count)`` entries) that ``addprocs`` takes."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    machines: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        count_text, star, spec = line.partition("*")
        try:
            if not star:
                parse_spec(line)
                machines.append(line)
                continue
            count_text, spec = count_text.strip(), spec.strip()
            count: int | str = int(count_text) if count_text.isdigit() else count_text
            parse_spec(spec, count)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{os.fspath(path)}:{number}: {exc}") from None
        machines.append((spec, count))
    return machines
