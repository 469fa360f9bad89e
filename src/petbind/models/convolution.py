"""Moved to :mod:`petbind.numerics.convolution` (below both the models and blood processing).

This module keeps the old import path working; new code imports from
:mod:`petbind.numerics.convolution`.
"""

from petbind.numerics.convolution import (  # noqa: F401
    MIN_RATE,
    ExpConvTable,
    PiecewiseLinear,
    mean_preserving_matrix,
    running_integral_frame_means,
)
