"""Numbers and p-values as the report prints them (one rule for every section)."""

from __future__ import annotations

import math
from typing import Any


def number(x: Any, digits: int = 2) -> str:
    """A number for people: fixed decimals, ``n/a`` for missing."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a" if x is None else str(x)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}f}"


def pvalue(p: Any) -> str:
    """A p-value: three significant digits, ``< 0.001`` below that."""
    try:
        v = float(p)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    if v < 0.001:
        return "< 0.001"
    return f"{v:.3f}"
