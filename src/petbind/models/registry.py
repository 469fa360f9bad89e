"""The model registry: one name -> one :class:`ModelSpec`, shared by the CLI, maps and pipeline.

The built-in models are the entries of :data:`petbind.models.catalogue.CATALOGUE`
(their code is imported when a model is first built, not when it is looked
up); :func:`register_model` adds others at run time.

Example
-------
>>> from petbind.models import get_model                      # doctest: +SKIP
>>> model = get_model("srtm", timing=timing, ref=cerebellum)  # doctest: +SKIP
>>> fit = model.fit(tacs)                                     # doctest: +SKIP
>>> fit.bp_nd                                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from petbind.errors import ModelError
from petbind.models.catalogue import (
    _ADDED,
    InputKind,
    K2Need,
    ModelSpec,
    PlotCoords,
    add_model,
    specs,
)
from petbind.timing import FrameTiming

__all__ = ["InputKind", "ModelSpec", "PlotCoords", "available_models", "get_model",
           "make_model", "model_spec", "register_model"]

#: The models registered at run time (the catalogue's added entries; popping one
#: unregisters it).
_REGISTRY = _ADDED


def _registry() -> dict[str, ModelSpec]:
    return {s.name: s for s in specs()}


def register_model(name: str, factory: Callable[..., Any] | str, *, input: InputKind,
                   description: str, params: tuple[str, ...] = (), k2prime: K2Need = "no",
                   **spec: Any) -> None:
    """Add a model to the registry (re-registering a name replaces it).

    ``spec`` takes the other fields of :class:`ModelSpec` (``citation``,
    ``k2prime_estimator``, ``work_bytes``, ...).
    """
    if input not in ("reference", "plasma"):
        raise ModelError(f"model {name!r}: input must be 'reference' or 'plasma'",
                         field="input", fix="register with input='reference' or 'plasma'")
    add_model(ModelSpec(name.lower(), factory, input, description, tuple(params), k2prime,
                        **spec))


def derived_rules(name: str) -> tuple[Any, ...]:
    """The :class:`~petbind.models.catalogue.Derived` rules of a model (none if unknown)."""
    spec = _registry().get(str(name).lower())
    return spec.derived if spec is not None else ()


def available_models(input: InputKind | None = None) -> list[str]:
    """Registered model names (optionally only those taking ``input``)."""
    return sorted(k for k, s in _registry().items() if input is None or s.input == input)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises
    ------
    ModelError
        If no model of that name is registered.
    """
    spec = _registry().get(str(name).lower())
    if spec is None:
        raise ModelError(f"unknown model {name!r}", field="model",
                         fix=f"use one of {', '.join(available_models())}")
    return spec


def get_model(name: str, *, timing: FrameTiming, **settings: Any) -> Any:
    """Configure a registered model.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"srtm"``, ``"mrtm2"``, ``"1tcm"``.
    timing : FrameTiming
        Frames of the curves to be fitted (minutes inside).
    **settings
        ``ref=`` (reference-region frame means, kBq/mL) for reference-tissue
        models, ``blood=`` for plasma-input models, plus model settings
        (``k2prime``, ``weights``, ``start``, ``end``, ...).

    Raises
    ------
    ModelError
        Unknown model, or the input curve the model needs is missing.
    """
    spec = model_spec(name)
    if spec.input == "reference" and settings.get("ref") is None:
        raise ModelError(f"model {spec.name} needs a reference region", field="ref",
                         fix="give --ref REGION")
    if spec.input == "plasma" and settings.get("blood") is None:
        raise ModelError(f"model {spec.name} needs an arterial input", field="blood",
                         fix="give --blood FILE")
    if spec.k2prime == "required" and settings.get("k2prime") is None:
        raise ModelError(f"model {spec.name} needs a fixed k2'", field="k2prime",
                         fix="give --k2prime VALUE (1/min) or --k2prime auto")
    if spec.k2prime == "no" and settings.get("k2prime") is not None:
        raise ModelError(f"model {spec.name} does not take a fixed k2'", field="k2prime",
                         fix="drop --k2prime or use a model such as mrtm2/srtm2")
    if spec.k2prime == "no":
        settings.pop("k2prime", None)
    return spec.build(timing, **settings)


def make_model(name: str, timing: FrameTiming, ref: Any, **settings: Any) -> Any:
    """Shorthand for ``get_model(name, timing=timing, ref=ref, **settings)``."""
    return get_model(name, timing=timing, ref=ref, **settings)
