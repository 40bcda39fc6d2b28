"""Julia's ``--machine-file`` format, for ``clustercore --machine-file FILE script.py``.

One machine per line: ``[count*][user@]host[:port] [bind_addr[:port]]``, with
``count`` a number or ``auto``. As an addition to Julia's format, blank lines
are skipped and ``#`` starts a comment, at the start of a line or after a
space (``node2   # the big one``). Errors name the file and line.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .spec import parse_spec

_COMMENT = re.compile(r"(^|\s)#.*$")


def parse_machine_file(path: str | os.PathLike[str]) -> list[Any]:
    """The machines list (``spec`` or ``(spec, count)`` entries) that ``addprocs`` takes."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    machines: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = _COMMENT.sub("", line).strip()
        if not line:
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
