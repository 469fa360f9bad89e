"""Kinetic models: one vectorised engine for regions and voxels.

Every model is configured once (timing, input curve, settings) and its
``fit(tacs, weights=None)`` fits a batch shaped ``(..., n_frames)`` in one
call, returning a :class:`~petbind.models.base.Fit`. Models are looked up by
name in the registry (:func:`get_model`), which is built from the model
catalogue (:mod:`petbind.models.catalogue`); see docs/models.md.

The names below are imported on first use, so that ``import
petbind.models.catalogue`` (the CLI's help texts) does not import numpy's
model code and pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Fit", "ModelSpec", "available_models", "get_model", "make_model", "model_spec",
           "register_model"]

_HOME = {"Fit": "petbind.models.base", "ModelSpec": "petbind.models.catalogue",
         **{n: "petbind.models.registry" for n in ("available_models", "get_model",
                                                    "make_model", "model_spec",
                                                    "register_model")}}

if TYPE_CHECKING:
    from petbind.models.base import Fit
    from petbind.models.catalogue import ModelSpec
    from petbind.models.registry import (
        available_models,
        get_model,
        make_model,
        model_spec,
        register_model,
    )


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'petbind.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
