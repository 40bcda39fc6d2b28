"""Kubernetes resource quantities (``500m``, ``1Gi``, ``2e3``) parsed to ``Decimal``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_SHAPE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024**i) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"], start=1)},
}


def parse_quantity(text: object) -> Decimal:
    """Parse a quantity; raise ``ValueError(QUANTITY_ERROR)`` like the API server's decoder."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Decimal(str(text))
    match = _SHAPE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(QUANTITY_ERROR)
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(QUANTITY_ERROR) from None
    if suffix in _SUFFIXES:
        return value * _SUFFIXES[suffix]
    exp = re.fullmatch(r"[eE]([-+]?[0-9]+)", suffix)
    if not exp:
        raise ValueError(QUANTITY_ERROR)
    return value * Decimal(10) ** int(exp.group(1))
