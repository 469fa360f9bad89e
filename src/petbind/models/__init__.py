"""Kinetic models: one vectorised engine for regions and voxels.

Every model is configured once (timing, input curve, settings) and its
``fit(tacs, weights=None)`` fits a batch shaped ``(..., n_frames)`` in one
call, returning a :class:`~petbind.models.base.Fit`. Models are looked up by
name in the registry (:func:`get_model`); see docs/models.md.
"""

from petbind.models.base import Fit
from petbind.models.registry import (
    ModelSpec,
    available_models,
    get_model,
    make_model,
    model_spec,
    register_model,
)

__all__ = ["Fit", "ModelSpec", "available_models", "get_model", "make_model", "model_spec",
           "register_model"]
