"""A scan's region fits: its target regions, k2' by the tracer's policy, every model.

The steps of :func:`petbind.study.scan_stage.process_scan` that the
partial-volume-corrected outputs (:func:`petbind.study.pvc.correct_scan_outputs`)
take again on the corrected curves; both import them from here.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import DataError
from petbind.study.config import K2PRIME_MODELS, TracerConfig
from petbind.study.discover import Scan


def target_regions(scan: Scan, tracer: TracerConfig, regions: list[str]) -> list[str]:
    """The tracer's target regions among ``regions`` (the atlas's), checked.

    Its ``target_regions`` when given, else every region but the reference and
    ``exclude_regions``; a reference or target the atlas lacks is an error
    naming the label table.
    """
    ref = tracer.reference_region
    if ref not in regions:
        raise DataError(f"the reference region {ref!r} of tracer {tracer.name} is not in "
                        "the atlas", path=scan.dseg_tsv, field="region",
                        fix=f"set tracers.{tracer.name}.reference_region to one of: "
                        f"{', '.join(regions)}")
    if tracer.target_regions:
        missing = [r for r in tracer.target_regions if r not in regions]
        if missing:
            raise DataError(f"target region(s) {missing} of tracer {tracer.name} are not in "
                            "the atlas", path=scan.dseg_tsv, field="region",
                            fix=f"use regions of the atlas: {', '.join(regions)}")
        return list(tracer.target_regions)
    return [r for r in regions if r != ref and r not in tracer.exclude_regions]


def model_kwargs(tracer: TracerConfig, model: str, tacs: Any) -> dict[str, Any]:
    """The tracer's ``model_settings`` of ``model``, with the sidecar's isotope for counts weights.

    Counts weighting of decay-corrected data needs the radionuclide
    (:func:`petbind.models.weights.frame_weights`); every BIDS-PET sidecar
    states it (``TracerRadionuclide``), so it is taken from there unless the
    settings name an isotope.
    """
    kw = dict(tracer.model_settings.get(model, {}))
    if kw.get("weights") == "counts" and "isotope" not in kw and tacs.metadata.get("isotope"):
        kw["isotope"] = tacs.metadata["isotope"]
    return kw


def estimate_k2prime(tracer: TracerConfig, tacs: Any, targets: list[str],
                     where: str) -> tuple[float | None, dict[str, Any]]:
    """k2' (1/min) by the tracer's policy, from region curves.

    The policy and its vocabulary are :mod:`petbind.models.k2prime`'s (the
    same as ``petbind fit --k2prime``): a number; ``"mrtm"`` / ``"srtm"`` with
    ``k2prime_region`` (or ``"mrtm@REGION"``): that model fitted to the region,
    k2' = k2 / R1 (Ichise et al. 2003; Wu & Carson 2002); ``"median"``: the
    median k2' over the valid targets; ``"auto"``: over their higher-binding
    half; ``"none"``: no k2' (Logan without its k2' term).

    Returns
    -------
    k2prime : float or None
        None when no configured model takes k2', or for ``"none"``.
    info : dict
        The policy and how k2' was obtained, for the sidecars.
    """
    from petbind.errors import ModelError
    from petbind.models.k2prime import k2prime_for_regions

    if not tracer.needs_k2prime:
        return None, ({} if tracer.k2prime != "none" else tracer.k2prime_policy.describe())
    policy = tracer.k2prime_policy
    if policy.kind == "value":
        return policy.value, policy.describe(method="config value")
    if policy.kind == "region" and policy.region not in tacs.regions:
        raise DataError(f"k2prime_region {policy.region!r} is not in the atlas",
                        path=where, field=f"tracers.{tracer.name}.k2prime_region",
                        fix=f"use one of: {', '.join(tacs.regions)}")
    used = [m for m in (*tracer.models, tracer.map_model) if m in K2PRIME_MODELS]
    model = policy.estimator(used or tracer.models)
    curves = {n: tacs.curve(n) for n in tacs.regions}
    ref = tacs.curve(tracer.reference_region)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value, info = k2prime_for_regions(
                policy, tacs.timing, ref, curves, targets, for_models=used,
                settings=model_kwargs(tracer, model, tacs),
                field=f"tracers.{tracer.name}.k2prime")
    except ModelError as exc:
        names = policy.region if policy.kind == "region" else ", ".join(targets)
        raise ModelError(f"k2' could not be estimated by {model} on {names}",
                         path=where, field=f"tracers.{tracer.name}.k2prime",
                         fix="give k2' as a number (1/min) or another k2prime_region"
                         ) from exc
    return value, info


def fit_regions(tracer: TracerConfig, tacs: Any, targets: list[str], k2: float | None,
                used: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every configured model on the target curves: (fits table, fitted-curves table).

    ``counts`` weights take the radionuclide of the scan's sidecar
    (``TracerRadionuclide``) unless the model settings name one. ``used``,
    when given, receives each model's settings as the model applied them
    (weights, window, isotope, t* rule ...), for the provenance and Methods.
    """
    from petbind.models import make_model, model_spec

    timing = tacs.timing
    ref = tacs.curve(tracer.reference_region)
    data = np.stack([tacs.curve(r) for r in targets])
    fits, curves = [], []
    for name in tracer.models:
        kw = dict(tracer.model_settings.get(name, {}))
        if k2 is not None and name in K2PRIME_MODELS and model_spec(name).k2prime != "no":
            kw["k2prime"] = k2
        iso_from_sidecar = (kw.get("weights") == "counts" and "isotope" not in kw
                            and bool(tacs.metadata.get("isotope")))
        if iso_from_sidecar:
            kw["isotope"] = tacs.metadata["isotope"]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make_model(name, timing, ref, **kw)
            fit = model.fit(data)
        if used is not None:
            used[name] = {**model.settings,
                          "isotope_source": ("TracerRadionuclide" if iso_from_sidecar
                                             else "model_settings" if "isotope" in kw
                                             else None)}
        frame = fit.to_frame(names=targets)
        if "k2prime" in kw and "k2prime" not in frame.columns:
            frame["k2prime"] = kw["k2prime"]
        fits.append(frame)
        fitted = np.broadcast_to(fit.fitted, data.shape)
        n_t = timing.n_frames
        curves.append(pd.DataFrame({
            "model": name, "region": np.repeat(targets, n_t),
            "frame": np.tile(np.arange(n_t), len(targets)),
            "frame_start": np.tile(timing.start_s, len(targets)),
            "frame_end": np.tile(timing.start_s + timing.duration_s, len(targets)),
            "frame_mid": np.tile(timing.start_s + timing.duration_s / 2, len(targets)),
            "measured": data.reshape(-1), "fitted": fitted.reshape(-1)}))
    table = pd.concat(fits, ignore_index=True)
    first = ["region", "model"]
    table = table[first + [c for c in table.columns if c not in first]]
    return table, pd.concat(curves, ignore_index=True)

