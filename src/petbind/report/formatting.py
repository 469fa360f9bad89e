"""Numbers and p-values as the report prints them (one rule for every section)."""

from __future__ import annotations

import math
from typing import Any


def _parse(x: Any) -> float | None:
    """``float(x)``, or None when ``x`` is not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def number(x: Any, digits: int = 2) -> str:
    """A number for people: fixed decimals, ``n/a`` for missing."""
    v = _parse(x)
    if v is None:
        return "n/a" if x is None else str(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


def pvalue(p: Any) -> str:
    """A p-value: three significant digits, ``< 0.001`` below that."""
    v = _parse(p)
    if v is None or not math.isfinite(v):
        return "n/a"
    if v < 0.001:
        return "< 0.001"
    return f"{v:.3f}"


def peq(p: Any) -> str:
    """A p-value with its relation sign, for sentences: ``= 0.023`` or ``< 0.001``."""
    text = pvalue(p)
    return text if text.startswith("<") else f"= {text}"


def signed(x: Any, digits: int = 1) -> str:
    """A number with its sign (``+18.3``), ``n/a`` for missing."""
    v = _parse(x)
    return f"{v:+.{digits}f}" if v is not None and math.isfinite(v) else "n/a"


def is_true(x: Any) -> bool:
    """A boolean cell of a table: ``True``/``"true"``; missing (None, NaN) is False."""
    if isinstance(x, str):
        return x.lower() == "true"
    return bool(x) if x is not None and not (isinstance(x, float) and math.isnan(x)) else False
