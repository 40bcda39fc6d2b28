"""What a script sends: functions and a class defined in ``__main__``, a lambda, a closure.

They are made by executing source in a namespace named ``__main__``, so every
pickler treats them as a script's own: by value (cloudpickle), code and all,
while :mod:`bench.tasks` holds the importable kind, which travels by name.
"""

from __future__ import annotations

from typing import Any

_SOURCE = """
import dataclasses


def main_noop(*args):
    return None


@dataclasses.dataclass
class Params:
    alpha: float = 0.1
    beta: float = 0.2
    gamma: float = 0.3
    steps: int = 100
    seed: int = 1234
    name: str = "run"
    tags: tuple = ("a", "b")
    lower: float = -1.0
    upper: float = 1.0
    verbose: bool = False


def make_closure(offset):
    def closure(*args):
        return offset and None
    return closure
"""

_namespace: dict[str, Any] = {"__name__": "__main__"}
exec(compile(_SOURCE, "<bench: a script's __main__>", "exec"), _namespace)

main_noop = _namespace["main_noop"]
Params = _namespace["Params"]
closure = _namespace["make_closure"](3)
lam = eval("lambda *args: None", _namespace)

VARIANTS: tuple[tuple[str, Any, tuple[Any, ...]], ...] = (
    ("__main__ function", main_noop, ()),
    ("lambda", lam, ()),
    ("closure", closure, ()),
    ("10-field dataclass arg", main_noop, (Params(),)),
)
"""(row label, function, arguments): clustercore's rows beside the importable ``noop``."""
