"""Write a study config for a BIDS-PET dataset: what ``petbind init BIDS_DIR`` does.

The dataset is inspected the way :mod:`petbind.study.discover` will read it
(``sub-*/[ses-*/]pet/*_pet.nii[.gz]``, entities, sidecars at the links' own
paths) and a commented, valid ``study.toml`` is written with the lab's own
names:

- tracers: the ``trc-`` labels (with the sidecars' ``TracerName``);
- conditions: a categorical column of ``sub-*_sessions.tsv`` when there is
  one (``condition``, ``treatment``, ``drug``, ``group``, ... first), else the
  ``ses-`` labels; the baseline is the condition named like one (baseline,
  placebo, vehicle, saline, control, pre ...), else the most frequent;
- the subjects (as a comment);
- anatomy: the first ``derivatives/*`` folder that holds a T1w-space
  segmentation for every subject (:func:`petbind.study.segmentation.find_segmentation`);
  its labels are grouped into suggested ``[regions]`` with left and right
  pooled, and a cerebellar-cortex reference is suggested when present;
- per tracer SRTM, MRTM2 and Logan (k2' as the median MRTM estimate over
  the targets, which needs no region name) with SRTM primary;
- one contrast per condition against the baseline.

The text is parsed by :func:`petbind.study.config.parse_config` before it is
returned, so what ``init`` writes, ``run`` accepts unedited.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petbind.errors import DataError, PetbindError

_BASELINE = re.compile(r"^(baseline|base|bl|placebo|vehicle|veh|saline|control|ctrl|pre|"
                       r"pretreatment|rest|off|drugfree|test)$", re.IGNORECASE)
_COND_COLUMNS = ("condition", "treatment", "drug", "challenge", "intervention", "task",
                 "state", "group", "session_type", "type")
_SKIP_COLUMNS = {"session_id", "participant_id", "acq_time", "age", "sex", "weight",
                 "height", "handedness", "injected_activity", "scan_date"}
_LR = [re.compile(p) for p in (r"^(Left|Right)[-_](?P<r>.+)$", r"^ctx[-_](lh|rh)[-_](?P<r>.+)$",
                                r"^(lh|rh)[-_.](?P<r>.+)$", r"^(L|R)[-_](?P<r>.+)$",
                                r"^(?P<r>.+?)[-_](L|R|lh|rh|left|right)$")]
_NON_TISSUE = re.compile(r"white|wm\b|^wm|csf|ventric|unknown|vessel|choroid|hypointens|"
                         r"non-wm|optic|background", re.IGNORECASE)


@dataclass
class DatasetSurvey:
    """What :func:`survey` found in a dataset."""

    bids: Path
    tracers: dict[str, str] = field(default_factory=dict)  # trc label -> TracerName
    subjects: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    condition_source: str = ""        # "" = ses labels, else "sessions.tsv:<col>"
    baseline: str = ""
    baseline_guessed: bool = False
    n_scans: int = 0
    select: dict[str, str] = field(default_factory=dict)
    segmentation: str = ""
    segmentation_kind: str = ""
    labels: list[str] = field(default_factory=list)
    atlas_regions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _entities(name: str) -> dict[str, str]:
    from petbind.study.discover import parse_entities

    return parse_entities(name)[0]


def _sessions_column(bids: Path, subjects: list[str]) -> tuple[str, dict[tuple[str, str], str]]:
    """The condition column of the sessions tables and (subject, ses) -> value."""
    from petbind.io.tables import read_tsv

    tables = {}
    for s in subjects:
        p = bids / f"sub-{s}" / f"sub-{s}_sessions.tsv"
        if p.is_file():
            tables[s] = read_tsv(p)
    if not tables:
        return "", {}
    cols = Counter(c for t in tables.values() for c in t.columns
                   if c not in _SKIP_COLUMNS and "session_id" in t.columns)
    usable = []
    for c in cols:
        values = [str(v) for t in tables.values() if c in t.columns for v in t[c]]
        n = len(set(values))
        if 2 <= n <= max(2, len(values) // 2) and all(re.fullmatch(r"[A-Za-z0-9]+", v)
                                                      for v in values):
            usable.append(c)
    if not usable:
        return "", {}
    col = min(usable, key=lambda c: (_COND_COLUMNS.index(c.lower())
                                     if c.lower() in _COND_COLUMNS else len(_COND_COLUMNS),
                                     c))
    out = {}
    for s, t in tables.items():
        if col in t.columns:
            for sid, v in zip(t["session_id"].astype(str), t[col].astype(str), strict=True):
                out[(s, sid.removeprefix("ses-"))] = v
    return col, out


def _selection(ents: list[dict[str, str]]) -> dict[str, str]:
    """``{entity: label}`` choosing one scan where a session holds several (rec-acdyn ...)."""
    keys = ("sub", "ses", "trc", "run")
    groups: dict[tuple, list[dict[str, str]]] = {}
    for e in ents:
        groups.setdefault(tuple(e.get(k) for k in keys), []).append(e)
    for members in groups.values():
        if len(members) < 2:
            continue
        for ent in sorted({k for e in members for k in e} - set(keys)):
            labels = sorted({e.get(ent, "") for e in members})
            if len(labels) == len(members):
                dyn = [v for v in labels if "dyn" in v.lower()]
                return {ent: (dyn or [v for v in labels if v] or labels)[0]}
    return {}


def region_groups(labels: list[str]) -> dict[str, list[str]]:
    """Suggested analysis regions: left and right labels pooled, names cleaned for TOML keys.

    >>> region_groups(["Left-Putamen", "Right-Putamen", "Brain-Stem"])
    {'Putamen': ['Left-Putamen', 'Right-Putamen'], 'Brain-Stem': ['Brain-Stem']}
    """
    groups: dict[str, list[str]] = {}
    for name in labels:
        base = name
        for rx in _LR:
            m = rx.match(name)
            if m:
                base = m.group("r")
                break
        key = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_-") or "region"
        groups.setdefault(key, []).append(name)
    return groups


def _reference(regions: list[str]) -> str | None:
    low = {r: r.lower() for r in regions}
    for test in (lambda s: "cerebell" in s and "cortex" in s and "white" not in s,
                 lambda s: "cerebell" in s and "white" not in s and "vermis" not in s):
        hit = [r for r, s in low.items() if test(s)]
        if hit:
            return hit[0]
    return None


def survey(bids_dir: str | Path) -> DatasetSurvey:
    """Inspect a BIDS-PET dataset for :func:`config_text`.

    Raises
    ------
    DataError
        Not a folder, or no PET scans.
    """
    from petbind.io.bids import read_pet_sidecar
    from petbind.study.discover import find_pet_files

    bids = Path(bids_dir)
    pets = find_pet_files(bids)
    sv = DatasetSurvey(bids=bids)
    ents = [_entities(p.name) for p in pets]
    sv.select = _selection(ents)
    keep = [all(e.get(k) == v for k, v in sv.select.items()) for e in ents]
    pets = [p for p, k in zip(pets, keep, strict=True) if k]
    ents = [e for e, k in zip(ents, keep, strict=True) if k]
    sv.n_scans = len(pets)
    for p, e in zip(pets, ents, strict=True):
        if "trc" not in e:
            sv.notes.append(f"{p.name} has no trc- entity: it is left out")
            continue
        if e["trc"] not in sv.tracers:
            try:
                side, _ = read_pet_sidecar(p)
                sv.tracers[e["trc"]] = str(side.get("TracerName", ""))
            except PetbindError:  # a bad sidecar is validate's business
                sv.tracers[e["trc"]] = ""
    sv.subjects = sorted({e["sub"] for e in ents})
    col, values = _sessions_column(bids, sv.subjects)
    if col:
        sv.condition_source = f"sessions.tsv:{col}"
        conds = [values.get((e["sub"], e.get("ses", ""))) for e in ents]
        missing = [p.name for p, c in zip(pets, conds, strict=True) if c is None]
        if missing:
            sv.notes.append(f"sessions.tsv gives no {col} for {len(missing)} scan(s), e.g. "
                            f"{missing[0]}; fill it in before `petbind run`")
        conds = [c for c in conds if c is not None]
    else:
        conds = [e.get("ses", "") for e in ents if e.get("ses")]
    counts = Counter(conds)
    sv.conditions = sorted(counts, key=lambda c: (-counts[c], c))
    named = [c for c in sv.conditions if _BASELINE.match(c)]
    sv.baseline = named[0] if named else (sv.conditions[0] if sv.conditions else "")
    sv.baseline_guessed = not named
    sv.conditions = [sv.baseline] + sorted(c for c in sv.conditions if c != sv.baseline)
    _find_anatomy(sv)
    return sv


def _find_anatomy(sv: DatasetSurvey) -> None:
    from petbind.study.segmentation import find_segmentation, label_names

    deriv = sv.bids / "derivatives"
    folders = sorted(d for d in deriv.iterdir() if d.is_dir() and d.name != "petbind") \
        if deriv.is_dir() else []
    for d in folders:
        rel = d.relative_to(sv.bids).as_posix()
        try:
            segs = [find_segmentation(sv.bids, s, rel) for s in sv.subjects]
            sv.labels = label_names(segs[0])
        except PetbindError:  # not a segmentation folder; try the next
            continue
        sv.segmentation, sv.segmentation_kind = rel, segs[0].kind
        return
    # a PET-space atlas per scan (the simulator's layout): suggest its regions
    from petbind.io.tables import read_tsv

    for d in folders:
        tsvs = sorted(d.glob("sub-*/**/pet/*_dseg.tsv"))
        if tsvs:
            t = read_tsv(tsvs[0])
            col = "region" if "region" in t.columns else "name"
            sv.atlas_regions = list(dict.fromkeys(str(v) for v in t[col]))
            return
    sv.notes.append("no segmentation or atlas found under derivatives/: set "
                    "dataset.segmentation (or dataset.atlas) before `petbind run`")


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: list[str], indent: int = 0) -> str:
    text = "[" + ", ".join(_toml_str(i) for i in items) + "]"
    if len(text) <= 88:
        return text
    pad = " " * (indent + 1)
    lines, line = [], ""
    for i in items:
        piece = _toml_str(i) + ", "
        if len(line) + len(piece) > 86:
            lines.append(line.rstrip())
            line = ""
        line += piece
    lines.append(line.rstrip().rstrip(","))
    return "[" + ("\n" + pad).join(lines) + "]"


def config_text(sv: DatasetSurvey) -> str:
    """The commented study config for the surveyed dataset (valid: it is parsed here).

    Raises
    ------
    DataError
        Fewer than two conditions (no contrast can be written), or no tracer.
    """
    from petbind.study.config import parse_config

    if not sv.tracers:
        raise DataError("no PET file names a tracer (trc- entity)", path=sv.bids,
                        field="trc", fix="name PET files ..._trc-<label>_pet.nii.gz")
    if len(sv.conditions) < 2:
        raise DataError(f"found {len(sv.conditions)} condition(s) {sv.conditions}; a study "
                        "compares at least two", path=sv.bids, field="ses",
                        fix="name sessions ses-<label> or add a condition column to "
                        "sub-*/sub-*_sessions.tsv")
    out = ["# petbind study config written by `petbind init` for",
           f"#   {sv.bids.resolve()}",
           f"# {sv.n_scans} PET scans of {len(sv.subjects)} subjects: "
           + ", ".join(f"sub-{s}" for s in sv.subjects[:20])
           + (" ..." if len(sv.subjects) > 20 else ""),
           "# Read it, change what you know better, then run",
           "#   petbind run BIDS_DIR --config THIS_FILE",
           "# Every key and its default: docs/study-config.md.", ""]
    for n in sv.notes:
        out.append(f"# NOTE: {n}")
    out += ["[dataset]", f"path = {_toml_str(str(sv.bids.resolve()))}"]
    if sv.select:
        pairs = ", ".join(f"{k} = {_toml_str(v)}" for k, v in sv.select.items())
        out += ["# sessions hold several reconstructions of one scan: use this one",
                f"select = {{{pairs}}}"]
    if sv.condition_source:
        out += [f"# conditions: the {sv.condition_source.split(':')[1]!r} column of "
                "sub-*/sub-*_sessions.tsv",
                f"condition = {_toml_str(sv.condition_source)}"]
    else:
        out.append("# conditions: the ses- labels of the file names")
    regions: dict[str, list[str]] = {}
    if sv.segmentation:
        out += [f"# each subject's {sv.segmentation_kind} segmentation in T1w space, mapped "
                "onto every PET scan",
                f"segmentation = {_toml_str(sv.segmentation)}"]
        regions = region_groups(sv.labels)
    out.append("")
    names = list(regions) if regions else sv.atlas_regions
    ref = _reference(names)
    excluded = [r for r in names if _NON_TISSUE.search(r)]
    if regions:
        out += ["# Analysis regions: atlas labels (exact names or glob patterns) pooled",
                "# volume-weighted; left and right are pooled here. Rename, merge or drop",
                "# freely: the tracers below name these regions.", "[regions]"]
        for r, labs in regions.items():
            out.append(f"{r} = {_list(labs, len(r) + 3)}")
        out.append("")
    for tracer, tname in sv.tracers.items():
        out.append(f"[tracers.{tracer}]" + (f"   # {tname}" if tname else ""))
        if ref:
            out.append(f"reference_region = {_toml_str(ref)}   # suggested: cerebellar "
                       "cortex; check that your tracer has no specific binding there")
        else:
            out.append('reference_region = "SET-ME"   # no cerebellar region found: name '
                       "your reference region")
        out += ["# [] = every region except the reference and exclude_regions",
                "target_regions = []",
                f"exclude_regions = {_list(excluded, 18)}",
                'models = ["srtm", "mrtm2", "logan"]',
                'primary_model = "srtm"',
                'map_model = "mrtm2"               # parametric BP_ND maps ("" = none)',
                "# k2' of MRTM2 / Logan: the median MRTM estimate over the targets; or a",
                '# number (1/min), or "mrtm" with k2prime_region = "<high-binding region>"',
                'k2prime = "median"',
                "# Frame weights per model, e.g. [tracers.X.model_settings.srtm] weights =",
                '# "counts" (the radionuclide comes from the sidecars\' TracerRadionuclide)',
                ""]
    for c in sv.conditions[1:]:
        out += ["[[contrasts]]", f"expr = {_toml_str(f'{c} - {sv.baseline}')}"]
    out += ["", "[statistics]",
            f"baseline_condition = {_toml_str(sv.baseline)}"
            + ("   # guessed (the most frequent condition): check" if sv.baseline_guessed
               else ""),
            "alpha = 0.05",
            '# two runs of one subject x condition x tracer: "error", "mean" or "first"',
            'runs = "error"', ""]
    text = "\n".join(out)
    parse_config(tomllib.loads(text), source="<petbind init>")
    return text


def suggested(text: str) -> dict[str, Any]:
    """The parsed TOML of :func:`config_text` (for tests and messages)."""
    return tomllib.loads(text)
