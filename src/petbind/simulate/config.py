"""The study-design file of the simulator (TOML), read and validated.

The default, ``petbind/data/simulate_default.toml``, is the founding study and
documents every key. :func:`load_config` reads a file (or the default),
applies command-line overrides and returns a :class:`SimConfig`; every problem
raises :class:`~petbind.errors.ConfigError` naming the key (``field``), the
file (``path``) and a fix.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petbind.errors import ConfigError, PetbindError
from petbind.io.tomlfile import read_toml
from petbind.isotopes import Isotope, get_isotope
from petbind.simulate.kinetics import BloodModel, ExpInput
from petbind.simulate.phantom import REGIONS
from petbind.timing import FrameTiming

DEFAULT_NAME = "simulate_default.toml"

#: Defaults of the ``[anatomy]`` table (every subject in template position).
ANATOMY_DEFAULTS: dict[str, Any] = {"native_position": False, "max_offset_mm": 5.0,
                                    "max_rotation_deg": 8.0}


def default_config_text() -> str:
    """The text of the default (founding-study) config, comments included."""
    from petbind.io.files import package_text

    return package_text("data", DEFAULT_NAME)


@dataclass(frozen=True)
class RegionTruth:
    """Baseline kinetics of one region for one tracer."""

    bp_nd: float
    r1: float
    vb: float


@dataclass(frozen=True)
class Effect:
    """Drug effect of one condition: percent changes of BP_ND and R1 per region."""

    bp_nd_change_pct: dict[str, float]
    r1_change_pct: dict[str, float]

    def bp_factor(self, region: str) -> float:
        """Multiplicative factor on BP_ND in ``region``."""
        pct = self.bp_nd_change_pct.get(region, self.bp_nd_change_pct.get("default", 0.0))
        return 1.0 + pct / 100.0

    def r1_factor(self, region: str) -> float:
        """Multiplicative factor on R1 in ``region``."""
        pct = self.r1_change_pct.get(region, self.r1_change_pct.get("default", 0.0))
        return 1.0 + pct / 100.0


NO_EFFECT = Effect({}, {})


@dataclass(frozen=True)
class TracerConfig:
    """One tracer: dose, reference kinetics, input, regions, drug effects."""

    name: str
    isotope: Isotope
    injected_mbq: float
    injected_mass_ug: float
    k1prime: float
    k2prime: float
    k4: float
    vb: float
    input_per_100mbq: ExpInput
    blood: BloodModel
    regions: dict[str, RegionTruth]
    effects: dict[str, Effect]

    @property
    def plasma_input(self) -> ExpInput:
        """Parent plasma input (kBq/mL) for the configured injected activity."""
        return self.input_per_100mbq.scaled(self.injected_mbq / 100.0)

    def effect(self, condition: str) -> Effect:
        """Effect of ``condition`` (none when the config lists none)."""
        return self.effects.get(condition, NO_EFFECT)


@dataclass(frozen=True)
class SimConfig:
    """A validated simulator study design."""

    seed: int
    subjects: list[str]
    conditions: list[str]
    tracers: list[TracerConfig]
    reference: str
    timing: FrameTiming
    phantom_voxel_mm: float
    phantom_seed: int
    pet_voxel_mm: float
    fwhm_mm: float
    noise: float
    decay_corrected: bool
    manufacturer: str
    scanner_model: str
    motion: bool
    max_translation_mm: float
    max_rotation_deg: float
    motion_start_min: float
    between_subject_cv: float
    k1prime_cv: float
    scan_cv_cortex: float
    scan_cv_subcortex: float
    native_position: bool = False
    max_offset_mm: float = 5.0
    max_anatomy_rotation_deg: float = 8.0
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pet_factor(self) -> int:
        """PET voxel edge in phantom voxels."""
        return round(self.pet_voxel_mm / self.phantom_voxel_mm)

    @property
    def n_scans(self) -> int:
        """Number of scans in the design."""
        return len(self.subjects) * len(self.conditions) * len(self.tracers)


class _Reader:
    """Typed access to nested TOML tables with errors that name the key."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def error(self, key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=self.source, field=key, fix=fix)

    def table(self, d: dict, key: str, allowed: set[str], required: set[str] = frozenset()
              ) -> dict:
        if not isinstance(d, dict):
            raise self.error(key, f"must be a table, got {d!r}", "write it as [section] or {...}")
        for k in d:
            if k not in allowed:
                raise self.error(f"{key}.{k}" if key else k, f"unknown key '{k}'",
                                 f"use one of: {', '.join(sorted(allowed))}")
        for k in required:
            if k not in d:
                raise self.error(f"{key}.{k}" if key else k, "missing", "add it (see "
                                 "`petbind simulate --print-config`)")
        return d

    def number(self, d: dict, key: str, name: str, *, lo: float | None = None,
               hi: float | None = None, lo_open: bool = False, default: float | None = None
               ) -> float:
        full = f"{key}.{name}" if key else name
        if name not in d:
            if default is None:
                raise self.error(full, "missing", "add a number")
            return float(default)
        v = d[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.error(full, f"must be a number, got {v!r}", "give a finite number")
        if lo is not None and (v <= lo if lo_open else v < lo):
            sign = ">" if lo_open else ">="
            raise self.error(full, f"must be {sign} {lo:g}, got {v:g}",
                             f"give a value {sign} {lo:g}")
        if hi is not None and v > hi:
            raise self.error(full, f"must be <= {hi:g}, got {v:g}", f"give a value <= {hi:g}")
        return float(v)

    def labels(self, v: Any, key: str, what: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.error(key, f"must be a list of {what} names, got {v!r}",
                             f'write e.g. {key} = ["a", "b"]')
        if not v:
            raise self.error(key, f"empty design: no {what}", f"list at least one {what}")
        bad = [x for x in v if not x.isalnum()]
        if bad:
            raise self.error(key, f"'{bad[0]}' is not a valid BIDS label",
                             "use letters and digits only")
        if len(set(v)) != len(v):
            raise self.error(key, f"duplicate {what} names", "list each once")
        return list(v)


#: Most subjects one simulation makes (each is a few MB of images on disk).
MAX_SUBJECTS = 10_000

_TOP = {"seed", "subjects", "conditions", "tracers", "reference", "frames", "phantom",
        "scanner", "motion", "anatomy", "variability", "tracer"}
_TRACER = {"radionuclide", "injected_mbq", "injected_mass_ug", "k1prime", "k2prime", "k4",
           "vb", "input", "regions", "effects"}
_INPUT = {"a1", "a2", "a3", "l1", "l2", "l3", "parent_fraction_inf", "metabolism_rate",
          "blood_plasma_ratio"}


def _frames(r: _Reader, d: dict) -> FrameTiming:
    d = r.table(d, "frames", {"schedule_s", "start_s", "duration_s"})
    try:
        if "schedule_s" in d:
            if set(d) != {"schedule_s"}:
                raise r.error("frames", "give either schedule_s or start_s + duration_s",
                              "keep one of the two forms")
            sched = d["schedule_s"]
            if (not isinstance(sched, list) or not sched
                    or not all(isinstance(x, list) and len(x) == 2 for x in sched)):
                raise r.error("frames.schedule_s", f"must be [[count, seconds], ...], got "
                              f"{sched!r}", "write e.g. [[6, 10], [3, 20]]")
            for count, _ in sched:
                if not isinstance(count, int) or count < 1:
                    raise r.error("frames.schedule_s", f"frame count {count!r} is not a "
                                  "positive integer", "give whole numbers of frames")
            return FrameTiming.from_schedule([(c, s) for c, s in sched], unit="s")
        if "start_s" in d and "duration_s" in d:
            return FrameTiming(d["start_s"], d["duration_s"], unit="s",
                               start_field="frames.start_s",
                               duration_field="frames.duration_s")
    except ConfigError:
        raise
    except PetbindError as exc:
        raise ConfigError(exc.message, path=r.source, field=exc.field or "frames",
                          fix=exc.fix) from exc
    raise r.error("frames", "no frames", "give schedule_s or start_s + duration_s")


def _tracer(r: _Reader, name: str, d: dict, reference: str) -> TracerConfig:
    key = f"tracer.{name}"
    d = r.table(d, key, _TRACER, {"input", "regions", "k1prime", "k2prime", "k4",
                                  "injected_mbq"})
    try:
        iso = get_isotope(d.get("radionuclide", "11C"))
    except PetbindError as exc:
        raise r.error(f"{key}.radionuclide", exc.message, exc.fix or "") from exc
    k1p = r.number(d, key, "k1prime", lo=0, lo_open=True)
    k2p = r.number(d, key, "k2prime", lo=0, lo_open=True)
    k4 = r.number(d, key, "k4", lo=0, lo_open=True)
    vb = r.number(d, key, "vb", lo=0, hi=1, default=0.0)
    dose = r.number(d, key, "injected_mbq", lo=0, lo_open=True)
    mass = r.number(d, key, "injected_mass_ug", lo=0, lo_open=True, default=1.0)

    ik = f"{key}.input"
    di = r.table(d["input"], ik, _INPUT, {"a1", "a2", "a3", "l1", "l2", "l3"})
    a = [r.number(di, ik, f"a{i}", lo=0) for i in (1, 2, 3)]
    lam = [r.number(di, ik, f"l{i}", lo=0, lo_open=True) for i in (1, 2, 3)]
    if not lam[0] > max(lam[1], lam[2]):
        raise r.error(f"{ik}.l1", "l1 must be the fastest rate (l1 > l2, l3)",
                      "swap the rates so the rising/peak term is l1")
    blood = BloodModel(
        parent_fraction_inf=r.number(di, ik, "parent_fraction_inf", lo=0, hi=1, lo_open=True,
                                     default=1.0),
        metabolism_rate=r.number(di, ik, "metabolism_rate", lo=0, default=0.0),
        blood_plasma_ratio=r.number(di, ik, "blood_plasma_ratio", lo=0, lo_open=True,
                                    default=1.0),
    )

    rk = f"{key}.regions"
    dr = r.table(d["regions"], rk, set(REGIONS))
    missing = [x for x in REGIONS if x not in dr]
    if missing:
        raise r.error(f"{rk}.{missing[0]}", "missing region",
                      f"give bp_nd and r1 for every region: {', '.join(REGIONS)}")
    regions: dict[str, RegionTruth] = {}
    for reg in REGIONS:
        k = f"{rk}.{reg}"
        e = r.table(dr[reg], k, {"bp_nd", "r1", "vb"}, {"bp_nd", "r1"})
        regions[reg] = RegionTruth(bp_nd=r.number(e, k, "bp_nd", lo=0),
                                   r1=r.number(e, k, "r1", lo=0, lo_open=True),
                                   vb=r.number(e, k, "vb", lo=0, hi=1, default=vb))
    ref = regions[reference]
    if ref.bp_nd != 0 or ref.r1 != 1:
        raise r.error(f"{rk}.{reference}", "the reference region must have bp_nd = 0 and "
                      "r1 = 1", "set them, or choose another reference")

    effects: dict[str, Effect] = {}
    ek = f"{key}.effects"
    for cond, e in r.table(d.get("effects", {}), ek,
                           set(d.get("effects", {}))).items():
        ck = f"{ek}.{cond}"
        e = r.table(e, ck, {"bp_nd_change_pct", "r1_change_pct"})
        parts = {}
        for which in ("bp_nd_change_pct", "r1_change_pct"):
            tk = f"{ck}.{which}"
            t = r.table(e.get(which, {}), tk, set(REGIONS) | {"default"})
            parts[which] = {reg: r.number(t, tk, reg, lo=-100, lo_open=True) for reg in t}
        effects[cond] = Effect(**parts)
    return TracerConfig(name=name, isotope=iso, injected_mbq=dose, injected_mass_ug=mass,
                        k1prime=k1p, k2prime=k2p, k4=k4, vb=vb,
                        input_per_100mbq=ExpInput.feng(*a, *lam), blood=blood,
                        regions=regions, effects=effects)


def parse_config(raw: dict[str, Any], source: str | None = None) -> SimConfig:
    """Validate a parsed TOML document and build a :class:`SimConfig`.

    Raises
    ------
    ConfigError
        Naming the offending key: unknown keys or regions, negative BP_ND,
        non-positive rates, an empty design, overlapping frames, ...
    """
    r = _Reader(source)
    raw = r.table(raw, "", _TOP, {"subjects", "conditions", "tracers", "frames", "tracer"})
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise r.error("seed", f"must be a non-negative integer, got {seed!r}",
                      "give e.g. seed = 1")
    subj = raw["subjects"]
    if isinstance(subj, int) and not isinstance(subj, bool):
        if subj < 1:
            raise r.error("subjects", f"empty design: {subj} subjects", "give at least 1")
        if subj > MAX_SUBJECTS:  # the subject list alone would exhaust memory
            raise r.error("subjects", f"{subj} subjects is more than petbind simulates "
                          f"(at most {MAX_SUBJECTS})", f"give at most {MAX_SUBJECTS} subjects; "
                          "simulate larger cohorts in batches (--seed per batch)")
        subjects = [f"{i:02d}" for i in range(1, subj + 1)]
    else:
        subjects = r.labels(subj, "subjects", "subject")
    conditions = r.labels(raw["conditions"], "conditions", "condition")
    tracer_names = r.labels(raw["tracers"], "tracers", "tracer")
    reference = raw.get("reference", "cerebellum")
    if reference not in REGIONS:
        raise r.error("reference", f"unknown region '{reference}'",
                      f"use one of: {', '.join(REGIONS)}")
    tables = r.table(raw["tracer"], "tracer", set(raw["tracer"]))
    for t in tracer_names:
        if t not in tables:
            raise r.error("tracers", f"tracer '{t}' has no table 'tracer.{t}'",
                          f"define it or use one of: {', '.join(tables) or 'none'}")
    tracers = [_tracer(r, t, tables[t], reference) for t in tracer_names]
    timing = _frames(r, raw["frames"])

    ph = r.table(raw.get("phantom", {}), "phantom", {"voxel_mm", "seed"})
    sc = r.table(raw.get("scanner", {}), "scanner",
                 {"voxel_mm", "fwhm_mm", "noise", "decay_corrected", "manufacturer", "model"})
    mo = r.table(raw.get("motion", {}), "motion",
                 {"enabled", "max_translation_mm", "max_rotation_deg", "start_min"})
    an = r.table(raw.get("anatomy", {}), "anatomy",
                 {"native_position", "max_offset_mm", "max_rotation_deg"})
    va = r.table(raw.get("variability", {}), "variability",
                 {"between_subject_cv", "k1prime_cv", "scan_cv_cortex", "scan_cv_subcortex"})
    pv = r.number(ph, "phantom", "voxel_mm", lo=0.25, hi=4.0, default=1.0)
    sv = r.number(sc, "scanner", "voxel_mm", lo=0.25, hi=8.0, default=2.0)
    factor = sv / pv
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
        raise r.error("scanner.voxel_mm", f"{sv:g} mm is not a whole multiple of the "
                      f"phantom's {pv:g} mm", "choose e.g. 1, 2 or 3 phantom voxels")
    for sect, d in (("scanner", sc), ("motion", mo), ("anatomy", an)):
        for k in ("decay_corrected", "enabled", "native_position"):
            if k in d and not isinstance(d[k], bool):
                raise r.error(f"{sect}.{k}", f"must be true or false, got {d[k]!r}",
                              "write true or false")
    pseed = ph.get("seed", 0)
    if isinstance(pseed, bool) or not isinstance(pseed, int) or pseed < 0:
        raise r.error("phantom.seed", f"must be a non-negative integer, got {pseed!r}",
                      "give e.g. seed = 7")
    return SimConfig(
        seed=seed, subjects=subjects, conditions=conditions, tracers=tracers,
        reference=reference, timing=timing, phantom_voxel_mm=pv, phantom_seed=pseed,
        pet_voxel_mm=sv, fwhm_mm=r.number(sc, "scanner", "fwhm_mm", lo=0, hi=20, default=2.8),
        noise=r.number(sc, "scanner", "noise", lo=0, hi=10, default=0.1),
        decay_corrected=sc.get("decay_corrected", True),
        manufacturer=str(sc.get("manufacturer", "petbind simulator")),
        scanner_model=str(sc.get("model", "procedural NHP scanner")),
        motion=mo.get("enabled", False),
        max_translation_mm=r.number(mo, "motion", "max_translation_mm", lo=0, default=1.5),
        max_rotation_deg=r.number(mo, "motion", "max_rotation_deg", lo=0, hi=30, default=1.5),
        motion_start_min=r.number(mo, "motion", "start_min", lo=0, default=2.0),
        between_subject_cv=r.number(va, "variability", "between_subject_cv", lo=0, hi=1,
                                    default=0.0),
        k1prime_cv=r.number(va, "variability", "k1prime_cv", lo=0, hi=1, default=0.0),
        scan_cv_cortex=r.number(va, "variability", "scan_cv_cortex", lo=0, hi=1, default=0.0),
        scan_cv_subcortex=r.number(va, "variability", "scan_cv_subcortex", lo=0, hi=1,
                                   default=0.0),
        native_position=an.get("native_position", ANATOMY_DEFAULTS["native_position"]),
        max_offset_mm=r.number(an, "anatomy", "max_offset_mm", lo=0, hi=20,
                               default=ANATOMY_DEFAULTS["max_offset_mm"]),
        max_anatomy_rotation_deg=r.number(an, "anatomy", "max_rotation_deg", lo=0, hi=20,
                                          default=ANATOMY_DEFAULTS["max_rotation_deg"]),
        source=source, raw=raw,
    )


def load_config(path: str | Path | None = None, *, subjects: int | None = None,
                tracers: list[str] | None = None, conditions: list[str] | None = None,
                noise: float | None = None, seed: int | None = None,
                native_position: bool | None = None, motion: bool | None = None
                ) -> SimConfig:
    """Read a study-design TOML file (default: the founding study) and apply overrides.

    Parameters
    ----------
    path : str or Path, optional
        TOML file; ``None`` reads the packaged default.
    subjects, tracers, conditions, noise, seed : optional
        Overrides of the top-level ``subjects``, ``tracers``, ``conditions``,
        ``seed`` and of ``scanner.noise`` (0 for noise-free images).
    native_position, motion : bool, optional
        Overrides of ``anatomy.native_position`` (each subject at its own
        rigid offset from the template) and ``motion.enabled``.

    Returns
    -------
    SimConfig

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or any key is invalid.
    """
    if path is None:
        source = None
        raw = tomllib.loads(default_config_text())
    else:
        source = str(path)
        raw = read_toml(path)
    if subjects is not None:
        raw["subjects"] = subjects
    if tracers is not None:
        raw["tracers"] = list(tracers)
    if conditions is not None:
        raw["conditions"] = list(conditions)
    if seed is not None:
        raw["seed"] = seed
    if noise is not None:
        raw.setdefault("scanner", {})["noise"] = noise
    if native_position is not None:
        raw.setdefault("anatomy", {})["native_position"] = native_position
    if motion is not None:
        raw.setdefault("motion", {})["enabled"] = motion
    return parse_config(raw, source)
