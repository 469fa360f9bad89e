"""The Methods section: an auto-written paragraph from the run's config and provenance, cited."""

from __future__ import annotations

from typing import Any

from petbind import __version__
from petbind.models.catalogue import CATALOGUE, ModelSpec, specs
from petbind.report.outputs import StudyOutputs, cfg_get, reference_region
from petbind.report.sections.summary import alpha_level

#: Published sources of the models (from the model catalogue) and of the methods
#: the methods paragraph can name.
CITATIONS: dict[str, str] = {
    **{spec.name: spec.citation for spec in CATALOGUE if spec.citation},
    "nomenclature": "Innis RB, Cunningham VJ, Delforge J, et al. Consensus nomenclature for "
                    "in vivo imaging of reversibly binding radioligands. J Cereb Blood Flow "
                    "Metab 2007;27:1533-1539.",
    "holm": "Holm S. A simple sequentially rejective multiple test procedure. Scand J Stat "
            "1979;6:65-70.",
    "bh": "Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B "
          "1995;57:289-300.",
    "permutation": "Nichols TE, Holmes AP. Nonparametric permutation tests for functional "
                   "neuroimaging: a primer with examples. Hum Brain Mapp 2002;15:1-25.",
    "fd": "Power JD, Barnes KA, Snyder AZ, Schlaggar BL, Petersen SE. Spurious but "
          "systematic correlations in functional connectivity MRI networks arise from subject "
          "motion. NeuroImage 2012;59:2142-2154.",
    "mattes": "Mattes D, Haynor DR, Vesselle H, Lewellen TK, Eubank W. PET-CT image "
              "registration in the chest using free-form deformations. IEEE Trans Med Imaging "
              "2003;22:120-128.",
    "syn": "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image "
           "registration with cross-correlation: evaluating automated labeling of elderly and "
           "neurodegenerative brain. Med Image Anal 2008;12:26-41.",
    "mixed": "Seabold S, Perktold J. statsmodels: econometric and statistical modeling with "
             "Python. Proc 9th Python in Science Conf 2010.",
}


#: Model name (as the config writes it, ``-`` dropped) -> its key in :data:`CITATIONS`;
#: models that share a citation (MRTM2 is Ichise 2003, as MRTM) name it once.
def _model_citations(catalogue: tuple[ModelSpec, ...]) -> dict[str, str]:
    return {spec.name.replace("-", ""): next(
        o.name for o in catalogue if o.citation == spec.citation) for spec in catalogue
        if spec.citation}


MODEL_CITATION = _model_citations(tuple(CATALOGUE))


def _citations() -> tuple[dict[str, str], dict[str, str]]:
    """:data:`CITATIONS` and :data:`MODEL_CITATION` with the models added at run time
    (:func:`petbind.models.catalogue.add_model`) as well as the built-in ones."""
    catalogue = specs()
    return ({**CITATIONS, **{s.name: s.citation for s in catalogue if s.citation}},
            _model_citations(catalogue))


def methods(study: StudyOutputs, design: dict[str, Any]) -> dict[str, Any]:
    """The auto-written methods paragraph and its citations."""
    cfg = study.config
    citations, model_citation = _citations()
    cites: list[str] = ["nomenclature"]
    parts = []
    n_sub = len(design["subjects"])
    parts.append(
        f"{n_sub} subject{'s' if n_sub != 1 else ''} were scanned under "
        f"{len(design['conditions'])} condition(s) ({', '.join(design['conditions'])}) with "
        f"{len(design['tracers'])} tracer(s) ({', '.join(design['tracers'])}); "
        f"{design['n_scans']} dynamic PET scans in total"
        + (" (simulated data with known truth)." if study.simulated else "."))
    for tracer in design["tracers"]:
        tr = (cfg.get("tracers") or {}).get(tracer) or {}
        models = tr.get("models") if isinstance(tr, dict) else None
        if not models and study.outcomes is not None:
            sel = study.outcomes[study.outcomes["tracer"].astype(str) == tracer]
            models = sorted(sel["model"].astype(str).unique())
        models = [str(m) for m in (models or [])]
        ref = reference_region(study, tracer) or "the reference region"
        primary = study.primary_model(tracer)
        map_model = tr.get("map_model") if isinstance(tr, dict) else None
        targets = tr.get("target_regions") if isinstance(tr, dict) else None
        txt = (f"For {tracer}, regional time-activity curves were extracted with the atlas "
               f"(left and right labels pooled, voxel-weighted)"
               + (f" for {', '.join(str(t) for t in targets)}" if targets else "")
               + f" and fitted with {', '.join(m.upper() for m in models) or 'the configured'}"
               f" models using {ref} as reference region; BP_ND of "
               f"{(primary or '').upper()} was the primary outcome")
        if map_model:
            txt += f", and parametric BP_ND maps were computed with {str(map_model).upper()}"
        k2p = k2prime_text(tr if isinstance(tr, dict) else {})
        if k2p:
            txt += f"; k2' was {k2p}"
        txt += ". " + settings_text(study, tracer, models, tr if isinstance(tr, dict) else {})
        atlas = _atlas_text(study, tracer)
        if atlas:
            txt += ". " + atlas
        parts.append(txt + ".")
        for m in [*models, map_model]:
            c = model_citation.get(str(m).lower().replace("-", "")) if m else None
            if c and c not in cites:
                cites.append(c)
    pre = _preprocess_methods(cfg)
    if pre:
        parts.append(pre[0])
        cites += [c for c in pre[1] if c not in cites]
    parts.append("Model predictions were frame averages of the continuous model (exact "
                 "integration over each frame), not mid-frame samples.")
    alpha = alpha_level(study)
    parts.append(
        "Changes between conditions were tested per region with two-sided paired t-tests "
        "(and exact Wilcoxon signed-rank tests) on BP_ND, with % change as "
        "100 (A - B) / B per subject and its 95 % t confidence interval; drug interactions "
        "were tested as differences of paired differences. p-values were corrected across "
        f"regions by Holm's method and by Benjamini-Hochberg (alpha = {alpha:g}). A linear "
        "mixed model (BP_ND ~ condition, random intercept per subject, REML) gave a "
        "model-based check. Power at the observed effect size d_z is reported as descriptive "
        "only.")
    cites += ["holm", "bh", "mixed"]
    if study.tmaps:
        from petbind.report.voxel_display import voxel_methods_text

        parts.append(voxel_methods_text(
            cfg_get(cfg, "statistics.voxel.smoothing_fwhm_mm", "voxel.smoothing_fwhm_mm"),
            cfg_get(cfg, "parametric.pet_fwhm_mm")))
        cites.append("permutation")
    prov = study.provenance
    versions = ", ".join(f"{k} {prov[k]}" for k in ("python", "numpy", "scipy", "statsmodels")
                         if prov.get(k))
    parts.append(f"Analyses used petbind {prov.get('petbind_version', __version__)}"
                 + (f" ({versions})" if versions else "") + ".")
    return {"paragraph": " ".join(parts), "citations": [citations[c] for c in cites]}


def _used_settings(study: StudyOutputs, tracer: str) -> dict[str, Any]:
    """The first scan's provenance record of ``tracer`` (what the fits actually used)."""
    for scan in study.scans:
        if scan.tracer == tracer and scan.provenance.get("models"):
            return scan.provenance
    return {}


def settings_text(study: StudyOutputs, tracer: str, models: list[str],
                   tr: dict[str, Any]) -> str:
    """Weights, fit window, t* and isotope of each model as the fits used them.

    From the scans' provenance (``models``: each model's ``settings``); a run
    without it (older outputs) falls back to the config's ``model_settings``.
    """
    used = _used_settings(study, tracer).get("models") or {}
    conf = tr.get("model_settings") or {}
    per: dict[str, dict[str, Any]] = {}
    for m in models:
        st = used.get(m)
        if not isinstance(st, dict):
            cm = conf.get(m) if isinstance(conf.get(m), dict) else {}
            st = {"weights": cm.get("weights", "uniform"), "start_min": cm.get("start"),
                  "end_min": cm.get("end"), "isotope": cm.get("isotope"),
                  "tstar_min": cm.get("tstar")}
        per[m] = st

    def weights(st: dict[str, Any]) -> str:
        w = str(st.get("weights") or "uniform")
        text = {"uniform": "uniformly", "duration": "duration",
                "counts": "counts (frame duration x decay-uncorrected activity)"}.get(w, w)
        if w == "counts" and st.get("isotope"):
            src = (" taken from the sidecars' TracerRadionuclide"
                   if st.get("isotope_source") == "TracerRadionuclide" else "")
            text += f", with the radionuclide {st['isotope']}{src}"
        return text

    def window(st: dict[str, Any]) -> str:
        a, b = st.get("start_min"), st.get("end_min")
        if a is None and b is None:
            return "the whole scan"
        return (f"{'injection' if a is None else f'{float(a):g} min'} to "
                f"{'the end of the scan' if b is None else f'{float(b):g} min'}")

    def grouped(fn: Any) -> str:
        texts = {m: fn(st) for m, st in per.items()}
        if len(set(texts.values())) <= 1:
            return next(iter(texts.values()), "")
        return "; ".join(f"{v} ({m.upper()})" for m, v in texts.items())

    if not per:
        return "Frames were weighted uniformly (the models' default)"
    w = grouped(weights)
    out = (f"Frames were weighted by {w}" if w != "uniformly"
           else "Frames were weighted uniformly (the models' default)")
    out += f"; the fit window was {grouped(window)}"
    for m, st in per.items():
        if "tstar_min" in st or "tstar_rule" in st:
            t = st.get("tstar_min")
            out += (f"; {m.upper()} t* was {float(t):g} min" if t is not None
                    else f"; {m.upper()} t* was chosen per curve ({st.get('tstar_rule')})"
                    if st.get("tstar_rule") else "")
    return out


def _atlas_text(study: StudyOutputs, tracer: str) -> str | None:
    """Where the regions came from and how the segmentation reached PET space."""
    atlas = _used_settings(study, tracer).get("atlas")
    if not isinstance(atlas, dict) or not atlas.get("description"):
        return None
    return str(atlas["description"])


def _preprocess_methods(cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The methods sentence on preprocessing (config ``[preprocess]``), with its citations."""
    pre = cfg.get("preprocess")
    if not isinstance(pre, dict) or pre.get("enabled") is not True:
        return None
    cites = []
    parts = []
    if pre.get("motion", True):
        block = pre.get("min_block_min")
        parts.append(
            "Head motion was corrected by rigid realignment of every frame to a mean image"
            + (f" (early frames pooled into blocks of at least {block:g} min)"
               if isinstance(block, int | float) else "")
            + "; framewise displacement (FD) was computed per frame and frames with FD above "
            f"{pre.get('fd_threshold_mm', 0.5):g} mm were flagged")
        cites.append("fd")
    parts.append("the mean realigned PET was registered rigidly to the subject's T1w (Mattes "
                 "mutual information) and the T1w to the template"
                 + (" (affine, then symmetric diffeomorphic SyN)" if pre.get("nonlinear", True)
                    else " (affine)"))
    cites.append("mattes")
    if pre.get("nonlinear", True):
        cites.append("syn")
    method = pre.get("atlas_method", "fraction")
    parts.append("the template atlas was brought into each scan's PET space "
                 + ("with partial-volume-aware label fractions" if method == "fraction"
                    else "by nearest-neighbour resampling")
                 + (", and voxel statistics were computed in template space"
                    if cfg_get(cfg, "statistics.voxel.enabled", default=True) is not False
                    else ""))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ".", cites


def k2prime_text(tracer_cfg: dict[str, Any]) -> str | None:
    """How k2' was obtained, in words, from a tracer's config section."""
    k2p = tracer_cfg.get("k2prime")
    if k2p is None:
        return None
    if isinstance(k2p, int | float):
        return f"fixed at {k2p:g} 1/min"
    region = tracer_cfg.get("k2prime_region")
    from petbind.errors import PetbindError
    from petbind.models.k2prime import parse_k2prime

    try:  # the study config's k2' policy, in the words of petbind.models.k2prime
        policy = parse_k2prime(k2p, region or None)
    except PetbindError:
        policy = None
    if policy is not None and policy.kind == "none":
        return "not used (Logan reference without its k2' term)"
    if policy is not None and policy.kind == "value":
        return f"fixed at {policy.value:g} 1/min"
    if policy is not None and policy.kind == "median":
        return (f"estimated per scan as the median {(policy.model or 'mrtm').upper()} k2' of "
                "the target regions and fixed in the models that need it (MRTM2, SRTM2, "
                "Logan reference) and in the parametric maps")
    if str(k2p).lower() in ("pooled", "auto") and not region:
        return f"estimated ({k2p}) from the data of each scan"
    if policy is not None and policy.kind == "region":
        k2p, region = policy.model, policy.region
    where = f" in {region}, a high-binding region," if region else ""
    return (f"estimated per scan by {str(k2p).upper()}{where} and fixed in the models that "
            "need it (MRTM2, SRTM2, Logan reference) and in the parametric maps")
