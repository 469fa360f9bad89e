"""Moved to :mod:`petbind.numerics.optimize` (below both the models and blood processing).

This module keeps the old import path working; new code imports from
:mod:`petbind.numerics.optimize`.
"""

from petbind.numerics.optimize import (  # noqa: F401
    LMResult,
    inv_sym,
    levenberg_marquardt,
    normal_equations,
)
