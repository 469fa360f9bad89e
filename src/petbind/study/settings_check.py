"""Which settings a model accepts, so that a config's typo is named, not a traceback.

``[tracers.X.model_settings.<model>]`` tables are passed to the model's
constructor as keyword arguments. A key the model does not take used to
surface as Python's ``TypeError: __init__() got an unexpected keyword
argument`` deep in the pipeline; :func:`check_model_settings` refuses it
when the config is read, listing the keys the model does take.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

#: Constructor arguments the pipeline supplies itself (never a setting).
SUPPLIED = frozenset({"self", "timing", "ref", "blood", "args", "kwargs", "kw"})


def accepted_settings(factory: Any) -> set[str] | None:
    """Keyword names a model factory accepts (every ``__init__`` up its class tree).

    ``factory`` may be the catalogue's ``"module:Class"`` name. Returns None
    when the factory takes ``**kwargs`` that no class resolves (then every key
    is allowed).
    """
    if isinstance(factory, str):
        import importlib

        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    funcs = ([c.__init__ for c in inspect.getmro(factory) if "__init__" in vars(c)]
             if inspect.isclass(factory) else [factory])
    names: set[str] = set()
    open_kw = False
    for f in funcs:
        try:
            sig = inspect.signature(f)
        except (TypeError, ValueError):
            return None
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                open_kw = True
            elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.add(p.name)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            open_kw = False
            break  # this class passes nothing further up
    if open_kw and not inspect.isclass(factory):
        return None
    return names - SUPPLIED


def check_model_settings(settings: Mapping[str, Mapping[str, Any]], field: str,
                         path: str | None = None) -> None:
    """Raise ConfigError for an unknown model or a setting the model does not take.

    Parameters
    ----------
    settings : mapping model -> mapping key -> value
        The ``model_settings`` table of a tracer.
    field : str
        Its config key (``tracers.DASB.model_settings``), named in the error.
    """
    from petbind.errors import ConfigError, PetbindError
    from petbind.models import available_models, model_spec

    for model, table in settings.items():
        try:
            spec = model_spec(model)
        except PetbindError:
            raise ConfigError(f"unknown model {model!r}", path=path, field=f"{field}.{model}",
                              fix=f"use one of {', '.join(available_models())}") from None
        allowed = accepted_settings(spec.factory)
        if allowed is None:
            continue
        for key in table:
            if key not in allowed:
                raise ConfigError(f"model {spec.name} has no setting {key!r}", path=path,
                                  field=f"{field}.{model}.{key}",
                                  fix=f"use one of {', '.join(sorted(allowed))}")
