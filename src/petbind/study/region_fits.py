"""A scan's region fits: its target regions, k2' by the tracer's policy, every model.

The steps of :func:`petbind.study.scan_stage.process_scan` that the
partial-volume-corrected outputs (:func:`petbind.study.pvc.correct_scan_outputs`)
take again on the corrected curves; both import them from here. k2' by the
tracer's policy (:func:`estimate_k2prime`) and the tracer's model settings
(:func:`model_kwargs`) are :mod:`petbind.models.k2prime`'s, named here for them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from petbind.errors import DataError
from petbind.models.k2prime import k2prime_for_tracer as estimate_k2prime
from petbind.models.k2prime import model_kwargs
from petbind.study.config import K2PRIME_MODELS, TracerConfig
from petbind.study.discover import Scan

__all__ = ["estimate_k2prime", "fit_regions", "model_kwargs", "target_regions"]


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

