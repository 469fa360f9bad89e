"""The model catalogue: everything petbind knows about a model, written once.

One :class:`ModelSpec` per model is the single source of its parameter
names and units, the input it needs (a reference region or an arterial
input), whether it takes a fixed reference efflux rate k2' and which model
estimates it, its citation, the working memory of a voxel fit, and the
coordinates of its linear plot. Every table that used to be written by hand
derives from it: the registry (:mod:`petbind.models.registry`), the models a
parametric map or a study config may name, the units in the sidecars of
``petbind fit`` and ``petbind parametric``, the ``--model`` help and the
citations of the report's Methods paragraph.

Adding a model: write its class (a subclass of
:class:`petbind.models.reference.ReferenceModel` or of the plasma base) in
its own module and add one :class:`ModelSpec` to :data:`CATALOGUE` below
(or, from outside petbind, :func:`petbind.models.registry.register_model`,
which calls :func:`add_model`); docs/adding-a-model.md.
The factory is named as ``"module:Class"`` and imported on first use, so
looking a model up never imports the model code (nor scipy).

This module imports nothing from petbind: it is data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

InputKind = Literal["reference", "plasma"]
K2Need = Literal["no", "optional", "required"]


@dataclass(frozen=True)
class Param:
    """A fitted or derived parameter: the same name means the same thing in every model.

    Attributes
    ----------
    name : str
        Column / attribute name (``"bp_nd"``).
    unit : str
        Unit as written in sidecars (``"unitless"``, ``"1/min"``, ``"mL/cm3"``).
    description : str
        One line.
    """

    name: str
    unit: str
    description: str


#: Every parameter name a model may report, with its unit (Innis et al. 2007 names).
PARAMETERS: dict[str, Param] = {p.name: p for p in (
    Param("bp_nd", "unitless", "non-displaceable binding potential, DVR - 1"),
    Param("dvr", "unitless", "distribution volume ratio, 1 + BP_ND"),
    Param("r1", "unitless", "relative delivery K1 / K1'"),
    Param("suvr", "unitless", "target / reference ratio over the window"),
    Param("k1", "mL/cm3/min", "plasma-to-tissue transfer rate K1"),
    Param("k2", "1/min", "target efflux rate"),
    Param("k3", "1/min", "association rate"),
    Param("k4", "1/min", "dissociation rate"),
    Param("k2a", "1/min", "apparent efflux rate theta3 = k2 / (1 + BP_ND)"),
    Param("k2prime", "1/min", "reference-region efflux rate k2'"),
    Param("vb", "unitless", "blood volume fraction"),
    Param("delay", "min", "input delay"),
    Param("vt", "mL/cm3", "total distribution volume V_T"),
    Param("vnd", "mL/cm3", "non-displaceable distribution volume V_ND"),
    Param("vnd_2tcm", "mL/cm3", "V_ND = K1 / k2 of a 2TCM fit"),
    Param("bp_p", "mL/cm3", "binding potential relative to plasma, V_T - V_ND"),
    Param("ki", "mL/cm3/min", "net influx rate K_i"),
    Param("v0", "mL/cm3", "Patlak intercept V_0"),
    Param("intercept", "min", "graphical-plot intercept"),
    Param("b", "min", "MA1 intercept term b"),
    Param("tstar", "min", "start of the linear part of a graphical plot t*"),
)}


@dataclass(frozen=True)
class Derived:
    """A parameter computed from a fit's parameters, declared once per model.

    A :class:`~petbind.models.base.Fit` stores only what its model solved for;
    a derived parameter (DVR from BP_ND, k2' = k2 / R1, V_T = K1 / k2 ...) is
    computed from those on access (:class:`petbind.models.base.Params`), so
    the number exists in one place and every output (tables, maps, sidecars)
    reads it under the same name.

    Attributes
    ----------
    name : str
        Parameter name (a key of :data:`PARAMETERS`).
    inputs : tuple of str
        Parameters it is computed from; it is NaN wherever one of them is
        (an invalid fit), and absent when one is missing.
    formula : str
        The rule in words, for docs and sidecars.
    func : callable
        ``func(params, settings)`` -> value (array or number, broadcast to the
        batch): ``params`` maps names to arrays, ``settings`` is the fit's.
        A module-level function, so fits stay picklable.
    """

    name: str
    inputs: tuple[str, ...]
    formula: str
    func: Callable[[Any, Any], Any]


def _dvr_from_bp(p: Any, s: Any) -> Any:
    return p["bp_nd"] + 1.0


def _bp_from_dvr(p: Any, s: Any) -> Any:
    return p["dvr"] - 1.0


def _dvr_from_suvr(p: Any, s: Any) -> Any:
    return p["suvr"] * 1.0


def _bp_from_suvr(p: Any, s: Any) -> Any:
    return p["suvr"] - 1.0


def _k2prime(p: Any, s: Any) -> Any:
    fixed = s.get("k2prime")
    return fixed if fixed is not None else p["k2"] / p["r1"]


def _vt_1tcm(p: Any, s: Any) -> Any:
    return p["k1"] / p["k2"]


def _vt_2tcm(p: Any, s: Any) -> Any:
    return p["k1"] / p["k2"] * (1.0 + p["k3"] / p["k4"])


def _bp_2tcm(p: Any, s: Any) -> Any:
    return p["k3"] / p["k4"]


def _ki_2tcm_irr(p: Any, s: Any) -> Any:
    return p["k1"] * p["k3"] / (p["k2"] + p["k3"])


def _undefined(p: Any, s: Any) -> Any:
    return float("nan")


DVR = Derived("dvr", ("bp_nd",), "BP_ND + 1", _dvr_from_bp)
BP_FROM_DVR = Derived("bp_nd", ("dvr",), "DVR - 1", _bp_from_dvr)
K2PRIME = Derived("k2prime", ("k2", "r1"), "k2 / R1 (the fixed k2' when one is given)",
                  _k2prime)


@dataclass(frozen=True)
class PlotCoords:
    """The linear plot of a graphical model: keys of ``Fit.extra`` and axis labels."""

    x: str
    y: str
    x_label: str
    y_label: str


@dataclass(frozen=True)
class ModelSpec:
    """What petbind knows about one model.

    Attributes
    ----------
    name : str
        Registry name (``"srtm"``), lower case.
    factory : callable or str
        ``factory(timing, **settings)`` -> a model with ``fit(tacs, weights=None)``;
        a string ``"module:attribute"`` is imported on first use (:meth:`build`).
    input : {"reference", "plasma"}
        Which input curve the model needs (``ref=`` or ``blood=``).
    description : str
        One line for help texts and sidecars.
    params : tuple of str
        Parameter names of its fits (keys of :data:`PARAMETERS`).
    k2prime : {"no", "optional", "required"}
        Whether the model takes a fixed reference efflux rate k2' (1/min):
        ``required`` refuses to run without it, ``optional`` runs with or
        without it (BF-SRTM's fixed-k2' variant, Logan with or without the
        k2' term), ``no`` refuses one.
    k2prime_estimator : str or None
        The model that estimates k2' for this one (``"mrtm"`` or ``"srtm"``,
        k2' = k2 / R1), when k2' is estimated from the data.
    k2prime_by_default : bool
        Whether a study's or a map's k2' policy supplies k2' to this model
        unless the policy is ``"none"`` (True for MRTM2, SRTM2 and Logan; the
        optional k2' of BF-SRTM is used only when given for it explicitly).
    citation : str
        The published source of the model (for the report's Methods).
    work_bytes : int or None
        Working memory of a voxel fit, bytes per voxel and frame beyond the
        float32 curves (sizes the chunks of a parametric map); None for models
        that parametric maps do not offer.
    plot : PlotCoords or None
        The linear plot a fit of a graphical model carries in ``Fit.extra``.
    gof_rule : bool
        Whether a fit with R^2 < 0 is invalid (:attr:`petbind.models.base.Fit.invalid_reason`):
        True for models fitted to the curve; False for the ratio and the graphical
        methods, whose ``fitted`` is implied by a line, not fitted.
    derived : tuple of Derived
        Parameters computed from the fitted ones (in output order, after them);
        the model's code returns only what it solves for.
    """

    name: str
    factory: Callable[..., Any] | str
    input: InputKind
    description: str
    params: tuple[str, ...] = ()
    k2prime: K2Need = "no"
    k2prime_estimator: str | None = None
    k2prime_by_default: bool = False
    citation: str = ""
    work_bytes: int | None = None
    plot: PlotCoords | None = None
    gof_rule: bool = True
    derived: tuple[Derived, ...] = ()

    @property
    def mappable(self) -> bool:
        """Whether ``petbind parametric`` can fit this model voxel by voxel."""
        return self.work_bytes is not None

    @property
    def units(self) -> dict[str, str]:
        """Unit of each parameter (and of its standard error)."""
        return {p: PARAMETERS[p].unit if p in PARAMETERS else "see model docs"
                for p in self.params}

    def build(self, timing: Any, **settings: Any) -> Any:
        """Call the factory (importing it first when it is named by a string)."""
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(timing, **settings)


_SRTM_PARAMS = ("bp_nd", "r1", "k2", "k2a", "k2prime", "dvr")
#: SRTM / MRTM families solve for BP_ND, R1, k2 and k2a; k2' and DVR follow.
_SRTM_DERIVED = (K2PRIME, DVR)
_REF = "petbind.models.reference"
_PLASMA = "petbind.models.plasma"

LAMMERTSMA_1996 = ("Lammertsma AA, Hume SP. Simplified reference tissue model for PET receptor "
                   "studies. NeuroImage 1996;4:153-158.")
WU_CARSON_2002 = ("Wu Y, Carson RE. Noise reduction in the simplified reference tissue model "
                  "for neuroreceptor functional imaging. J Cereb Blood Flow Metab "
                  "2002;22:1440-1452.")
GUNN_1997 = ("Gunn RN, Lammertsma AA, Hume SP, Cunningham VJ. Parametric imaging of "
             "ligand-receptor binding in PET using a simplified reference region model. "
             "NeuroImage 1997;6:279-287.")
ICHISE_2003 = ("Ichise M, Liow JS, Lu JQ, et al. Linearized reference tissue parametric "
               "imaging methods: application to [11C]DASB PET studies of the serotonin "
               "transporter in human brain. J Cereb Blood Flow Metab 2003;23:1096-1112.")
LOGAN_1996 = ("Logan J, Fowler JS, Volkow ND, et al. Distribution volume ratios without "
              "blood sampling from graphical analysis of PET data. J Cereb Blood Flow Metab "
              "1996;16:834-840.")
CARSON_1993 = ("Carson RE, Channing MA, Blasberg RG, et al. Comparison of bolus and infusion "
               "methods for receptor quantitation: application to [18F]cyclofoxy and "
               "positron emission tomography. J Cereb Blood Flow Metab 1993;13:24-42.")
GUNN_2001 = ("Gunn RN, Gunn SR, Cunningham VJ. Positron emission tomography compartmental "
             "models. J Cereb Blood Flow Metab 2001;21:635-652.")
LOGAN_1990 = ("Logan J, Fowler JS, Volkow ND, et al. Graphical analysis of reversible "
              "radioligand binding from time-activity measurements applied to "
              "[N-11C-methyl]-(-)-cocaine PET studies in human subjects. J Cereb Blood Flow "
              "Metab 1990;10:740-747.")
PATLAK_1983 = ("Patlak CS, Blasberg RG, Fenstermacher JD. Graphical evaluation of "
               "blood-to-brain transfer constants from multiple-time uptake data. J Cereb "
               "Blood Flow Metab 1983;3:1-7.")
ICHISE_2002 = ("Ichise M, Toyama H, Innis RB, Carson RE. Strategies to improve neuroreceptor "
               "parameter estimation by linear regression analysis. J Cereb Blood Flow Metab "
               "2002;22:1271-1281.")

def _srtm_family(name: str, cls: str, description: str, **fields: Any) -> ModelSpec:
    """An entry of the SRTM / MRTM families: same parameters, k2' and DVR derived."""
    return ModelSpec(name, f"{_REF}:{cls}", "reference", description, _SRTM_PARAMS,
                     derived=_SRTM_DERIVED, **fields)


_PLASMA_PLOT = PlotCoords("x", "y", "x (min)", "y")
_LOGAN_REF_PLOT = PlotCoords("logan_x", "logan_y",
                             "[int C_R (+ C_R / k2')] / C_T (min)", "int C_T / C_T (min)")

#: The built-in models, in the order help texts list them. ``work_bytes``:
#: tracemalloc peak of a chunk fit at 29 frames, rounded up (MRTM2 7, BF-SRTM 12,
#: MRTM 22, Logan 93, SRTM2 123, SRTM 128); MRTM2 and BF-SRTM read the float32
#: view block by block, the others fit a float64 copy of the chunk.
CATALOGUE: tuple[ModelSpec, ...] = (
    _srtm_family("srtm", "SRTM", "simplified reference tissue model, non-linear "
                 "(Lammertsma 1996)", citation=LAMMERTSMA_1996, work_bytes=140),
    _srtm_family("srtm2", "SRTM2", "SRTM with fixed k2' (Wu & Carson 2002)",
                 k2prime="required", k2prime_estimator="srtm", k2prime_by_default=True,
                 citation=WU_CARSON_2002, work_bytes=140),
    _srtm_family("bfsrtm", "BFSRTM", "basis-function SRTM (Gunn 1997); fixed-k2' variant "
                 "with k2prime", k2prime="optional", k2prime_estimator="srtm",
                 citation=GUNN_1997, work_bytes=16),
    _srtm_family("mrtm", "MRTM", "multilinear reference tissue model (Ichise 2003)",
                 citation=ICHISE_2003, work_bytes=32),
    _srtm_family("mrtm2", "MRTM2", "MRTM with fixed k2' (Ichise 2003)", k2prime="required",
                 k2prime_estimator="mrtm", k2prime_by_default=True, citation=ICHISE_2003,
                 work_bytes=10),
    ModelSpec("logan", f"{_REF}:LoganRef", "reference",
              "Logan reference graphical analysis, with the k2' term when k2' is given "
              "(Logan 1996)",
              ("bp_nd", "dvr", "intercept", "tstar"), k2prime="optional",
              k2prime_estimator="mrtm", k2prime_by_default=True, citation=LOGAN_1996,
              work_bytes=100, plot=_LOGAN_REF_PLOT, gof_rule=False, derived=(BP_FROM_DVR,)),
    ModelSpec("suvr", "petbind.models.ratio:TissueRatio", "reference",
              "target/reference ratio over a late window (SUVR - 1 as BP_ND)",
              ("suvr", "bp_nd", "dvr"), citation=CARSON_1993, work_bytes=32,
              gof_rule=False,
              derived=(Derived("bp_nd", ("suvr",), "SUVR - 1", _bp_from_suvr),
                       Derived("dvr", ("suvr",), "SUVR", _dvr_from_suvr))),
    ModelSpec("1tcm", f"{_PLASMA}:OneTCM", "plasma",
              "one-tissue compartment model, plasma input (V_T)",
              ("k1", "k2", "vb", "vt"), citation=GUNN_2001,
              derived=(Derived("vt", ("k1", "k2"), "K1 / k2", _vt_1tcm),)),
    ModelSpec("2tcm", f"{_PLASMA}:TwoTCM", "plasma",
              "reversible two-tissue compartment model, plasma input (V_T, BP_ND)",
              ("k1", "k2", "k3", "k4", "vb", "vt", "bp_nd"), citation=GUNN_2001,
              derived=(Derived("vt", ("k1", "k2", "k3", "k4"), "K1 / k2 (1 + k3 / k4)",
                               _vt_2tcm),
                       Derived("vnd_2tcm", ("k1", "k2"), "K1 / k2", _vt_1tcm),
                       Derived("bp_nd", ("k3", "k4"), "k3 / k4", _bp_2tcm))),
    ModelSpec("2tcm-irr", f"{_PLASMA}:TwoTCMIrreversible", "plasma",
              "irreversible two-tissue compartment model, plasma input (K_i)",
              ("k1", "k2", "k3", "vb", "ki", "vt"), citation=GUNN_2001,
              derived=(Derived("ki", ("k1", "k2", "k3"), "K1 k3 / (k2 + k3)", _ki_2tcm_irr),
                       Derived("vt", ("k1",), "not defined for an irreversible model (NaN)",
                               _undefined))),
    ModelSpec("logan-plasma", f"{_PLASMA}:LoganPlasma", "plasma",
              "Logan graphical analysis, plasma input (V_T)", ("vt", "intercept"),
              citation=LOGAN_1990, plot=_PLASMA_PLOT, gof_rule=False),
    ModelSpec("patlak", f"{_PLASMA}:Patlak", "plasma", "Patlak plot, plasma input (K_i)",
              ("ki", "v0", "vt"), citation=PATLAK_1983, plot=_PLASMA_PLOT,
              gof_rule=False),
    ModelSpec("ma1", f"{_PLASMA}:MA1", "plasma",
              "Ichise multilinear analysis MA1, plasma input (V_T)", ("vt", "b"),
              citation=ICHISE_2002, plot=_PLASMA_PLOT, gof_rule=False),
)

#: Models given a tracer's k2' (1/min) unless its policy is "none": the
#: reference-tissue models whose ``k2prime_by_default`` is set (MRTM2, SRTM2, Logan).
K2PRIME_MODELS: tuple[str, ...] = tuple(s.name for s in CATALOGUE
                                        if s.input == "reference" and s.k2prime_by_default)


def parameter_units(names: Any = None) -> dict[str, str]:
    """Units of the given parameter / column names that are known (all when None)."""
    if names is None:
        return {k: p.unit for k, p in PARAMETERS.items()}
    return {str(n): PARAMETERS[str(n)].unit for n in names if str(n) in PARAMETERS}


#: Models added at run time (:func:`add_model`, used by
#: :func:`petbind.models.registry.register_model`), after the built-in ones.
_ADDED: dict[str, ModelSpec] = {}


def add_model(spec: ModelSpec) -> None:
    """Add (or replace) a model after the built-in ones: the run-time catalogue entry.

    Everything that reads the catalogue through :func:`specs` (the registry,
    :func:`model_names`, the ``--model`` help of commands built afterwards)
    then knows it.
    """
    _ADDED[spec.name] = spec


def specs() -> tuple[ModelSpec, ...]:
    """Every model: the built-in :data:`CATALOGUE`, then those added by :func:`add_model`."""
    builtin = tuple(s for s in CATALOGUE if s.name not in _ADDED)
    return builtin + tuple(_ADDED.values())


def model_names(input: InputKind | None = None, *, mappable: bool | None = None
                ) -> tuple[str, ...]:
    """Names of the models in catalogue order (added ones last), optionally filtered."""
    return tuple(s.name for s in specs()
                 if (input is None or s.input == input)
                 and (mappable is None or s.mappable == mappable))


def model_choices(input: InputKind, *, mappable: bool | None = None) -> str:
    """``"a | b | c"`` for help texts."""
    return " | ".join(model_names(input, mappable=mappable))


def gof_rule(name: str) -> bool:
    """``ModelSpec.gof_rule`` of a catalogue model (True for a model not in the catalogue)."""
    for spec in specs():
        if spec.name == name:
            return spec.gof_rule
    return True
