"""Kinetic models: one vectorised engine for regions and voxels.

Every model is configured once (timing, input curve, settings) and its
``fit(tacs, weights=None)`` fits a batch shaped ``(..., n_frames)`` in one
call, returning a :class:`~petbind.models.base.Fit`.
"""
