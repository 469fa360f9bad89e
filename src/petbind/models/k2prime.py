"""One k2' policy: how the reference efflux rate k2' (1/min) is chosen, in one vocabulary.

``petbind fit --k2prime``, ``petbind parametric --k2prime`` and a study
config's ``tracers.<name>.k2prime`` (with ``k2prime_region``) all take the
same words, parsed by :func:`parse_k2prime` into a :class:`K2PrimePolicy`
whose :meth:`~K2PrimePolicy.describe` is written into every sidecar:

``<number>``
    k2' in 1/min, used as given.
``none``
    No k2': Logan runs without its k2' term, BF-SRTM in its free variant;
    refused for models that require k2' (MRTM2, SRTM2).
``mrtm@REGION`` / ``srtm@REGION`` (or ``mrtm`` / ``srtm`` with a separate region)
    k2' = k2 / R1 of that model fitted to the named high-binding region
    (Ichise et al. 2003; Wu & Carson 2002). In ``petbind parametric`` the
    region is ``--k2prime-region`` (a mask or an atlas label) and the model is
    fitted to its mean voxel curve.
``median`` (alias ``pooled``)
    The median k2' of the estimator fitted to every candidate curve: all
    target regions (``fit``, study), or the voxels of the high-binding set
    (``parametric``, one fit per voxel).
``auto``
    petbind picks the high-binding part: the median over the higher-binding
    half of the target regions (BP_ND at or above their median;
    ``fit``, study), or one fit to the mean curve of the top 2 % of voxels by
    late tissue-to-reference ratio (``parametric``,
    :func:`petbind.parametric.estimate_k2prime`).

The estimator is named in the policy (``srtm@putamen``), else it is the
catalogue's :attr:`~petbind.models.catalogue.ModelSpec.k2prime_estimator` of
the model k2' is for (SRTM for SRTM2 and BF-SRTM, MRTM otherwise), and MRTM
when a study's policy serves several models that disagree.

References
----------
Ichise M, et al. Linearized reference tissue parametric imaging methods:
application to [11C]DASB PET studies of the serotonin transporter in human
brain. J Cereb Blood Flow Metab 2003;23:1096-1112.
Wu Y, Carson RE. Noise reduction in the simplified reference tissue model for
neuroreceptor functional imaging. J Cereb Blood Flow Metab 2002;22:1440-1452.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, ModelError
from petbind.models.base import Fit
from petbind.models.catalogue import K2PRIME_MODELS, specs
from petbind.timing import FrameTiming

PolicyKind = Literal["value", "none", "region", "median", "auto"]
#: Models that estimate k2' (k2' = k2 / R1).
ESTIMATORS = ("mrtm", "srtm")
#: The words of the vocabulary (besides a number and ``<estimator>@<region>``).
WORDS = ("none", "auto", "median", "pooled", *ESTIMATORS)
#: One line for help texts and config errors.
VOCABULARY = ("a number (1/min), 'none', 'auto', 'median', or 'mrtm@REGION' / "
              "'srtm@REGION' (that model fitted in a named high-binding region)")



def _specs() -> dict[str, Any]:
    """Catalogue entries by name (models registered at run time included)."""
    return {s.name: s for s in specs()}

__all__ = [
    "ESTIMATORS",
    "K2PRIME_MODELS",
    "VOCABULARY",
    "WORDS",
    "K2PrimePolicy",
    "check_policy_for",
    "estimate_k2prime",
    "k2prime_for_regions",
    "k2prime_for_tracer",
    "k2prime_from_fit",
    "model_kwargs",
    "parse_k2prime",
    "uses_k2prime",
]


@dataclass(frozen=True)
class K2PrimePolicy:
    """A parsed k2' policy (see the module docs for the vocabulary).

    Attributes
    ----------
    kind : {"value", "none", "region", "median", "auto"}
    value : float or None
        k2' in 1/min (``kind == "value"``).
    model : {"mrtm", "srtm"} or None
        Estimator named by the policy; None: the catalogue's for the model.
    region : str or None
        The named high-binding region (``kind == "region"``).
    """

    kind: PolicyKind
    value: float | None = None
    model: str | None = None
    region: str | None = None

    @property
    def text(self) -> str:
        """The policy in the vocabulary's words (round-trips through :func:`parse_k2prime`)."""
        if self.kind == "value":
            return f"{self.value:g}"
        if self.kind == "region":
            return f"{self.model}@{self.region}" if self.region else str(self.model)
        return self.kind

    @property
    def estimates(self) -> bool:
        """Whether k2' comes from the data (not a number, not none)."""
        return self.kind in ("region", "median", "auto")

    def estimator(self, for_models: str | Iterable[str]) -> str:
        """The model that estimates k2' for ``for_models`` (see the module docs)."""
        if self.model is not None:
            return self.model
        names = [for_models] if isinstance(for_models, str) else list(for_models)
        known = _specs()
        est = {known[n].k2prime_estimator for n in names
               if n in known and known[n].k2prime_estimator}
        return est.pop() if len(est) == 1 else "mrtm"

    def describe(self, **extra: Any) -> dict[str, Any]:
        """The policy for a sidecar: ``policy`` (its words), ``kind`` and the details."""
        out: dict[str, Any] = {"policy": self.text, "kind": self.kind}
        if self.value is not None:
            out["value_per_min"] = self.value
        if self.model is not None:
            out["model"] = self.model
        if self.region is not None:
            out["region"] = self.region
        out.update(extra)
        return out


def parse_k2prime(value: Any, region: str | None = None, *, field: str = "k2prime"
                  ) -> K2PrimePolicy:
    """Parse a k2' policy from a number or a word of the vocabulary.

    Parameters
    ----------
    value : float, str or None
        ``0.12``, ``"0.12"``, ``"none"`` (also None), ``"auto"``, ``"median"``,
        ``"pooled"`` (= median), ``"mrtm@putamen"``, ``"srtm"`` (with ``region``).
    region : str, optional
        The high-binding region for a bare ``"mrtm"`` / ``"srtm"`` (a study
        config's ``k2prime_region``).
    field : str
        Option or config key named in errors (``--k2prime``, ``tracers.X.k2prime``).

    Raises
    ------
    ModelError
        Anything else, a number that is not a positive finite rate, or an
        unknown estimator.
    """
    if value is None:
        return K2PrimePolicy("none")
    if isinstance(value, bool):
        raise ModelError(f"k2' must be {VOCABULARY}, got {value!r}", field=field,
                         fix="e.g. k2prime = 0.12 or k2prime = \"mrtm@putamen\"")
    if isinstance(value, int | float):
        number: float | None = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None:
            word = text.lower()
            if word == "pooled":
                word = "median"
            if word in ("none", "auto", "median"):
                return K2PrimePolicy(word)  # type: ignore[arg-type]
            model, at, where = text.partition("@")
            model = model.strip().lower()
            if model in ESTIMATORS:
                reg = where.strip() if at else region
                if at and not reg:
                    raise ModelError(f"k2' policy {text!r} names no region", field=field,
                                     fix=f"write {model}@REGION, e.g. {model}@putamen")
                return K2PrimePolicy("region", model=model, region=reg or None)
            raise ModelError(f"k2' must be {VOCABULARY}, got {text!r}", field=field,
                             fix="e.g. 0.12, auto, median, none or mrtm@putamen")
    if not math.isfinite(number) or number <= 0:
        raise ModelError(f"k2' must be a positive rate (1/min), got {value}", field=field,
                         fix="give k2' in 1/min, e.g. 0.12")
    return K2PrimePolicy("value", value=number)


def check_policy_for(policy: K2PrimePolicy, models: Iterable[str], *, field: str = "k2prime"
                     ) -> None:
    """Refuse ``none`` for a model that requires k2' (MRTM2, SRTM2)."""
    if policy.kind != "none":
        return
    known = _specs()
    need = [m for m in models if m in known and known[m].k2prime == "required"]
    if need:
        raise ModelError(f"k2' policy 'none' but {', '.join(need)} need(s) k2'", field=field,
                         fix="give k2' as a number, 'auto', 'median' or 'mrtm@REGION'")


def uses_k2prime(model: str, policy: K2PrimePolicy) -> bool:
    """Whether ``model`` is given the policy's k2' (see ``ModelSpec.k2prime_by_default``).

    Used where one policy serves several models (a study's tracer, a map's
    default): a model that requires k2' always is; Logan unless the policy is
    ``none``; BF-SRTM's optional k2' is not (``petbind fit --model bfsrtm
    --k2prime ...`` gives it explicitly).
    """
    spec = _specs().get(model)
    if spec is None or policy.kind == "none":
        return False
    return spec.k2prime == "required" or spec.k2prime_by_default


# ----------------------------------------------------------------------------
# estimating k2' from curves
# ----------------------------------------------------------------------------
def k2prime_from_fit(fit: Fit) -> NDArray:
    """k2' (1/min) implied by an MRTM or SRTM fit (``k2 / R1``), NaN where invalid."""
    if "k2prime" in fit.params:
        return np.asarray(fit.params["k2prime"], dtype=float)
    raise ModelError(f"a {fit.model} fit does not estimate k2'", field="model",
                     fix="use MRTM or SRTM to estimate k2'")


def estimate_k2prime(timing: FrameTiming, ref: ArrayLike, tacs: ArrayLike, *,
                     method: str = "mrtm", high_binding: ArrayLike | None = None,
                     **settings: Any) -> tuple[float, dict[str, Any]]:
    """k2' from MRTM or SRTM on high-binding regions, pooled by the median.

    Parameters
    ----------
    timing : FrameTiming
        Frames (minutes).
    ref : array_like, shape (n_frames,)
        Reference-region curve (kBq/mL).
    tacs : array_like, shape (R, n_frames)
        Candidate target curves (regions, or a region's mean voxel curve).
    method : {"mrtm", "srtm"}
        Model that estimates k2' (= k2 / R1).
    high_binding : array_like of bool or int, optional
        Which curves to pool. Default: the valid fits whose BP_ND is at least
        the median BP_ND of the valid fits (the higher-binding half), since
        k2' is best determined where binding is high (Ichise et al. 2003).
    **settings
        Passed to the model (weights, start, end, ...).

    Returns
    -------
    k2prime : float
        Median of the selected k2' values (1/min).
    info : dict
        ``method``, ``values`` (all k2'), ``bp_nd``, ``selected`` (indices).

    Raises
    ------
    ModelError
        If no selected fit is valid or the pooled value is not positive.
    """
    from petbind.models.registry import get_model

    if method not in ESTIMATORS:
        raise ModelError(f"unknown k2' method {method!r}", field="k2prime_method",
                         fix="use 'mrtm' or 'srtm'")
    y = np.atleast_2d(np.asarray(tacs, dtype=float))
    settings.pop("k2prime", None)
    fit = get_model(method, timing=timing, ref=ref, **settings).fit(y)
    k2p = k2prime_from_fit(fit)
    bp = np.asarray(fit.params["bp_nd"])
    ok = np.asarray(fit.valid) & np.isfinite(k2p) & (k2p > 0)
    if high_binding is None:
        sel = ok & (bp >= np.median(bp[ok])) if ok.any() else ok
    else:
        hb = np.asarray(high_binding)
        mask = np.zeros(y.shape[0], dtype=bool)
        mask[hb] = True
        sel = ok & mask
    if not sel.any():
        raise ModelError(f"no valid {method.upper()} fit to estimate k2' from",
                         field="k2prime", fix="give --k2prime VALUE (1/min)")
    value = float(np.median(k2p[sel]))
    info = {"method": method, "values": k2p.tolist(), "bp_nd": bp.tolist(),
            "selected": np.flatnonzero(sel).tolist(), "k2prime": value, "pool": "median"}
    return value, info


def k2prime_for_regions(policy: K2PrimePolicy, timing: FrameTiming, ref: ArrayLike,
                        curves: Any, names: Sequence[str], *, for_models: str | Iterable[str],
                        settings: dict[str, Any] | None = None, field: str = "k2prime"
                        ) -> tuple[float | None, dict[str, Any]]:
    """k2' by ``policy`` from region curves (``petbind fit`` and the study pipeline).

    Parameters
    ----------
    policy : K2PrimePolicy
    timing : FrameTiming
    ref : array_like, shape (n_frames,)
        Reference curve (kBq/mL).
    curves : mapping name -> curve, or array_like (R, n_frames)
        Region curves: every candidate region, ``names`` in order when an array.
    names : sequence of str
        The target regions (the candidates of ``auto`` and ``median``).
    for_models : str or iterable of str
        The model(s) k2' is for (choose the estimator).
    settings : dict, optional
        Model settings for the estimator (weights, window, ...).
    field : str
        Option / key named in errors.

    Returns
    -------
    k2prime : float or None
        None for ``none``.
    info : dict
        :meth:`K2PrimePolicy.describe` plus ``model``, ``regions`` used and
        ``value_per_min`` - for the sidecars.

    Raises
    ------
    ModelError
        The named region is unknown, or no valid fit to estimate from.
    """
    if policy.kind == "none":
        return None, policy.describe()
    if policy.kind == "value":
        return policy.value, policy.describe(method="user value")
    lookup = curves if hasattr(curves, "keys") else dict(zip(names, np.atleast_2d(curves),
                                                              strict=True))
    model = policy.estimator(for_models)
    kw = dict(settings or {})
    if policy.kind == "region":
        if policy.region is None:
            raise ModelError(f"k2' policy {policy.text!r} needs a high-binding region",
                             field=field, fix=f"write {policy.model}@REGION")
        if policy.region not in lookup:
            raise ModelError(f"k2' region {policy.region!r} is not a region of the data",
                             field=field, fix=f"use one of: {', '.join(map(str, lookup))}")
        use = [policy.region]
        high = np.arange(1)
    else:
        use = list(names)
        high = None if policy.kind == "auto" else np.arange(len(use))
    y = np.stack([np.asarray(lookup[n], dtype=float) for n in use])
    value, info = estimate_k2prime(timing, ref, y, method=model, high_binding=high, **kw)
    return value, policy.describe(
        model=model, method=model, regions=[use[i] for i in info["selected"]], value_per_min=value,
        rule={"region": "k2 / R1 of the model fitted in the named region",
              "median": "median k2 / R1 over the valid target regions",
              "auto": "median k2 / R1 over the higher-binding half of the target regions "
                      "(BP_ND >= its median)"}[policy.kind])


# ----------------------------------------------------------------------------
# a study tracer's k2' (the study pipeline and the power simulation)
# ----------------------------------------------------------------------------
def model_kwargs(tracer: Any, model: str, tacs: Any) -> dict[str, Any]:
    """The tracer's ``model_settings`` of ``model``, with the sidecar's isotope for counts weights.

    Counts weighting of decay-corrected data needs the radionuclide
    (:func:`petbind.models.weights.frame_weights`); every BIDS-PET sidecar
    states it (``TracerRadionuclide``), so it is taken from there unless the
    settings name an isotope.

    Parameters
    ----------
    tracer : object
        A study tracer (``petbind.study.config.TracerConfig``): its
        ``model_settings`` mapping of model name -> settings is read.
    model : str
    tacs : petbind.tac.TACTable
        The scan's region curves (``metadata["isotope"]`` from the sidecar).
    """
    kw = dict(tracer.model_settings.get(model, {}))
    if kw.get("weights") == "counts" and "isotope" not in kw and tacs.metadata.get("isotope"):
        kw["isotope"] = tacs.metadata["isotope"]
    return kw


def k2prime_for_tracer(tracer: Any, tacs: Any, targets: list[str],
                       where: str) -> tuple[float | None, dict[str, Any]]:
    """k2' (1/min) by a study tracer's policy, from its scan's region curves.

    The one k2' rule of ``petbind run`` and of the power simulation
    (:mod:`petbind.stats.power`); the policy and its vocabulary are this
    module's (the same as ``petbind fit --k2prime``): a number; ``"mrtm"`` /
    ``"srtm"`` with ``k2prime_region`` (or ``"mrtm@REGION"``): that model
    fitted to the region, k2' = k2 / R1 (Ichise et al. 2003; Wu & Carson
    2002); ``"median"``: the median k2' over the valid targets; ``"auto"``:
    over their higher-binding half; ``"none"``: no k2' (Logan without its k2'
    term).

    Parameters
    ----------
    tracer : object
        A study tracer (``petbind.study.config.TracerConfig``; read, duck-typed:
        ``name``, ``models``, ``map_model``, ``reference_region``,
        ``model_settings``, ``k2prime``, ``k2prime_policy``, ``needs_k2prime``).
    tacs : petbind.tac.TACTable
        The scan's region curves.
    targets : list of str
        Target regions (the candidates of ``auto`` and ``median``).
    where : str
        The file named in errors (the scan's atlas table).

    Returns
    -------
    k2prime : float or None
        None when no configured model takes k2' (:data:`K2PRIME_MODELS`), or
        for ``"none"``.
    info : dict
        The policy and how k2' was obtained, for the sidecars.

    Raises
    ------
    DataError
        The policy's region is not in the atlas.
    ModelError
        k2' could not be estimated.
    """
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
