"""Numerics with no PET vocabulary, below both the models and the blood processing.

- :mod:`petbind.numerics.convolution`: the piecewise-linear curve
  (:class:`~petbind.numerics.convolution.PiecewiseLinear`), exact frame means
  of it, of its running integral and of its convolution with exponentials,
  and the spline table of that kernel.
- :mod:`petbind.numerics.optimize`: the batched Levenberg-Marquardt solver,
  normal equations and the stacked symmetric inverse.
- :mod:`petbind.numerics.grid`: block means of voxel grids (the simulator's
  phantom to PET voxels, partial-volume correction's atlas sub-voxels,
  registration's coarser grids).

:mod:`petbind.models` and :mod:`petbind.blood` import from here; nothing here
imports them (tests/test_import_graph.py).
"""
