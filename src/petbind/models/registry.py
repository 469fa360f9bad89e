"""The model registry: one name -> one factory, shared by the CLI, maps and pipeline.

Reference-tissue models (:mod:`petbind.models.reference`,
:mod:`petbind.models.ratio`) and plasma-input models
(:mod:`petbind.models.plasma`) register themselves here when imported;
:func:`get_model` imports them on first use.

Example
-------
>>> from petbind.models import get_model                      # doctest: +SKIP
>>> model = get_model("srtm", timing=timing, ref=cerebellum)  # doctest: +SKIP
>>> fit = model.fit(tacs)                                     # doctest: +SKIP
>>> fit.bp_nd                                                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from petbind.errors import ModelError
from petbind.timing import FrameTiming

InputKind = Literal["reference", "plasma"]

#: Modules that register models when imported (missing optional ones are skipped).
_BUILTIN_MODULES = ("petbind.models.reference", "petbind.models.ratio",
                    "petbind.models.plasma")


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model.

    Attributes
    ----------
    name : str
        Registry name (``"srtm"``).
    factory : callable
        ``factory(timing, **kwargs)`` -> a model with ``fit(tacs, weights=None)``.
    input : {"reference", "plasma"}
        Which input curve the model needs (``ref=`` or ``blood=``).
    description : str
        One line for help texts.
    params : tuple of str
        Parameter names of its fits (uniform across models).
    k2prime : {"no", "optional", "required"}
        Whether the model takes a fixed reference efflux rate k2' (1/min).
    """

    name: str
    factory: Callable[..., Any]
    input: InputKind
    description: str
    params: tuple[str, ...] = ()
    k2prime: Literal["no", "optional", "required"] = "no"


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED: set[str] = set()


def register_model(name: str, factory: Callable[..., Any], *, input: InputKind,
                   description: str, params: tuple[str, ...] = (),
                   k2prime: Literal["no", "optional", "required"] = "no") -> None:
    """Add a model to the registry (re-registering a name replaces it)."""
    if input not in ("reference", "plasma"):
        raise ModelError(f"model {name!r}: input must be 'reference' or 'plasma'",
                         field="input", fix="register with input='reference' or 'plasma'")
    _REGISTRY[name.lower()] = ModelSpec(name.lower(), factory, input, description,
                                        tuple(params), k2prime)


def _load_builtins(until: str | None = None) -> None:
    """Import the built-in model modules: all of them, or until ``until`` is registered.

    Looking up a reference model then does not import the plasma models (and
    scipy.stats with them), which costs seconds per command.
    """
    for mod in _BUILTIN_MODULES:
        if until is not None and until in _REGISTRY:
            return
        if mod in _LOADED:
            continue
        _LOADED.add(mod)
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def available_models(input: InputKind | None = None) -> list[str]:
    """Registered model names (optionally only those taking ``input``)."""
    _load_builtins()
    return sorted(k for k, s in _REGISTRY.items() if input is None or s.input == input)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``.

    Raises
    ------
    ModelError
        If no model of that name is registered.
    """
    key = str(name).lower()
    _load_builtins(until=key)
    spec = _REGISTRY.get(key)
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
    return spec.factory(timing, **settings)


def make_model(name: str, timing: FrameTiming, ref: Any, **settings: Any) -> Any:
    """Shorthand for ``get_model(name, timing=timing, ref=ref, **settings)``."""
    return get_model(name, timing=timing, ref=ref, **settings)
