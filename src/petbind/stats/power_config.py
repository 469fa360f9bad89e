"""The ``[power]`` section of a study config: prospective power of the study's own design.

With ``[power] enabled = true``, ``petbind run`` ends the region statistics
with a prospective power analysis (:mod:`petbind.stats.power`) of the
finished study's design: the simulator design (``simulate_config``, default
the founding study) with its baseline BP_ND and between-subject and
test-retest variability taken from the study's own estimates
(:func:`petbind.stats.power_design.design_from_outcomes`), the effects to plan for
(``effects``), and the study's models, k2' policy, target regions and
contrasts. The results go to ``OUT/group/power/`` and the report's
prospective power section. ``petbind power --config study.toml`` reads the
same keys (its options override them).

This module only validates the table (:func:`parse_power`); the study
config parser (:mod:`petbind.study.config`) calls it, and the keys' one-line
meanings (:data:`POWER_MEANING`) feed ``docs/study-config.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petbind.errors import ConfigError

#: The keys of ``[power]`` and what they mean (docs/study-config.md).
POWER_MEANING: dict[str, str] = {
    "power.enabled": "prospective power of this design at the end of `petbind run` "
                     "(`group/power/`, the report's power section); also read by "
                     "`petbind power --config`",
    "power.n": "numbers of subjects to simulate: a list, e.g. `[4, 6, 8, 10, 12]`, or "
               "`\"3..12\"`",
    "power.n_studies": "simulated studies (the same studies serve every n)",
    "power.alpha": "two-sided level of the simulated paired t-tests",
    "power.seed": "seed of the simulated studies",
    "power.models": "`all` configured models of each tracer, or the `primary` one",
    "power.simulate_config": "`petbind simulate` design TOML (kinetics, scanner, noise, "
                             "effects); `\"\"` = the founding study; relative to this file",
    "power.from_study": "take baseline BP_ND and between-subject and test-retest "
                        "variability from this study's estimates (`group/outcomes.tsv`)",
    "power.effects": "effects to plan for, `\"TRACER:CONDITION:REGION=PCT\"` (% change of "
                     "BP_ND; REGION `default` = every other region), e.g. "
                     "`[\"AZ10419369:ketamine:NAcc=15\"]`; `[]` = the design's",
    "power.regions": "target regions to simulate and test; `[]` = every tracer's targets",
    "power.contrasts": "contrasts (names or expressions) to test; `[]` = all",
}

_KEYS = {k.split(".", 1)[1] for k in POWER_MEANING}
EFFECT_RE = re.compile(r"\s*([^:\s]+):([^:\s]+):([^=\s]+)\s*=\s*([-+0-9.eE]+)\s*")


@dataclass(frozen=True)
class PowerConfig:
    """The validated ``[power]`` table (see :data:`POWER_MEANING`).

    Attributes
    ----------
    enabled : bool
    n : tuple of int
    n_studies : int
    alpha : float
    seed : int
    models : str
    simulate_config : Path or None
        None = the founding study.
    from_study : bool
    effects : tuple of str
    regions : tuple of str
    contrasts : tuple of str
    """

    enabled: bool = False
    n: tuple[int, ...] = (4, 6, 8, 10, 12)
    n_studies: int = 200
    alpha: float = 0.05
    seed: int = 0
    models: str = "all"
    simulate_config: Path | None = None
    from_study: bool = True
    effects: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    contrasts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every default filled in (TOML / JSON serialisable)."""
        return {"enabled": self.enabled, "n": list(self.n), "n_studies": self.n_studies,
                "alpha": self.alpha, "seed": self.seed, "models": self.models,
                "simulate_config": str(self.simulate_config) if self.simulate_config else "",
                "from_study": self.from_study, "effects": list(self.effects),
                "regions": list(self.regions), "contrasts": list(self.contrasts)}


def parse_n(value: Any, field: str, path: Any = None) -> tuple[int, ...]:
    """Numbers of subjects from ``[4, 6, 8]``, ``"4,6,8"`` or ``"3..12"`` (inclusive).

    Raises
    ------
    ConfigError
        Not readable, or a number below 2 (naming ``field``).
    """
    out: tuple[int, ...] = ()
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in value):
        out = tuple(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if ".." in text:
                lo, hi = (int(x) for x in text.split(".."))
                out = tuple(range(lo, hi + 1))
            else:
                out = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            out = ()
    example = (f"{field} 4,6,8,10,12 or {field} 3..12" if field.startswith("--") else
               "n = [4, 6, 8, 10, 12] or n = \"3..12\"")
    if not out:
        raise ConfigError(f"cannot read the numbers of subjects {value!r}", path=path,
                          field=field, fix=f"give e.g. {example}")
    if min(out) < 2:
        raise ConfigError(f"numbers of subjects {list(out)}: each must be >= 2", path=path,
                          field=field, fix=f"give e.g. {example}")
    return tuple(sorted(set(out)))


def check_effect(spec: Any, field: str, path: Any = None) -> str:
    """A ``TRACER:CONDITION:REGION=PCT`` string, or a ConfigError naming ``field``."""
    if not isinstance(spec, str) or not EFFECT_RE.fullmatch(spec):
        raise ConfigError(f"cannot read effect {spec!r}", path=path, field=field,
                          fix="write TRACER:CONDITION:REGION=PCT, e.g. "
                              "AZ10419369:ketamine:NAcc=15")
    return spec


def parse_power(data: Any, *, source: str | None = None, base_dir: Path | None = None,
                contrasts: Sequence[Any] = ()) -> PowerConfig:
    """Validate the ``[power]`` table of a study config.

    Parameters
    ----------
    data : dict
        The table (``{}`` when absent).
    source : str, optional
        The config file, for error messages.
    base_dir : Path, optional
        Folder a relative ``simulate_config`` is relative to.
    contrasts : sequence of Contrast
        The study's contrasts (``power.contrasts`` must name some of them).

    Raises
    ------
    ConfigError
        One line naming the key (``power.n_studies`` ...), what is wrong and the fix.
    """
    def fail(key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=source, field=f"power.{key}", fix=fix)

    if not isinstance(data, dict):
        raise ConfigError(f"must be a table, got {type(data).__name__}", path=source,
                          field="power", fix="write [power] with keys below it")
    extra = sorted(set(data) - _KEYS)
    if extra:
        raise fail(extra[0], f"unknown key '{extra[0]}'", f"use one of: {', '.join(sorted(_KEYS))}")
    d = PowerConfig()

    def boolean(key: str, default: bool) -> bool:
        v = data.get(key, default)
        if not isinstance(v, bool):
            raise fail(key, f"must be true or false, got {v!r}", f"{key} = true")
        return v

    def integer(key: str, default: int, lo: int, hi: int) -> int:
        v = data.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool):
            raise fail(key, f"must be an integer, got {v!r}", f"e.g. {key} = {default}")
        if not lo <= v <= hi:
            raise fail(key, f"{v} is outside [{lo}, {hi}]", f"use a value in [{lo}, {hi}]")
        return v

    def strings(key: str) -> tuple[str, ...]:
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise fail(key, f"must be a list of strings, got {v!r}",
                       f"write e.g. {key} = [\"...\"]")
        return tuple(v)

    alpha = data.get("alpha", d.alpha)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise fail("alpha", f"must be a number in (0, 1), got {alpha!r}", "e.g. alpha = 0.05")
    models = data.get("models", d.models)
    if models not in ("all", "primary"):
        raise fail("models", f"{models!r} is not allowed", "use one of: all, primary")
    sim = data.get("simulate_config", "")
    if not isinstance(sim, str):
        raise fail("simulate_config", f"must be a string, got {sim!r}",
                   "give a path, or \"\" for the founding study")
    sim_path = None
    if sim:
        sim_path = Path(sim)
        if not sim_path.is_absolute() and base_dir is not None:
            sim_path = base_dir / sim_path
    effects = strings("effects")
    for i, e in enumerate(effects):
        check_effect(e, f"power.effects[{i}]", source)
    chosen = strings("contrasts")
    known = {x for c in contrasts for x in (c.name, c.expr)}
    for i, c in enumerate(chosen):
        if contrasts and c not in known:
            raise fail(f"contrasts[{i}]", f"{c!r} is not a contrast of the study",
                       f"use a name or expression of [[contrasts]]: "
                       f"{', '.join(x.name for x in contrasts)}")
    return PowerConfig(
        enabled=boolean("enabled", d.enabled),
        n=parse_n(data.get("n", list(d.n)), "power.n", source),
        n_studies=integer("n_studies", d.n_studies, 2, 1_000_000),
        alpha=float(alpha), seed=integer("seed", d.seed, 0, 2**32 - 1), models=models,
        simulate_config=sim_path, from_study=boolean("from_study", d.from_study),
        effects=effects, regions=strings("regions"), contrasts=chosen)
