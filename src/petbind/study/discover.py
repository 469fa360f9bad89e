"""Find the scans of a study in a BIDS dataset: subject x condition x tracer x run.

Scans are the ``sub-*/[ses-*/]pet/*_pet.nii[.gz]`` files; their BIDS entities
(``sub``, ``ses``, ``trc``, ``run`` ...) say which subject, condition (the
entity named by ``dataset.condition_entity``, ``ses`` by default), tracer and
run each one is. The atlas of a scan is a ``<stem>_dseg.nii.gz`` (+
``_dseg.tsv``) in PET space under ``derivatives/`` with the same relative
folder and stem, as the simulator writes it (docs/developing.md, "Dataset
and output layout").

Problems of the design are found here, before any fitting: a contrast that
names a condition no scan has (error), a subject missing a condition
(warning: the subject drops out of that contrast), two runs where one is
expected (error unless ``statistics.runs`` says ``mean`` or ``first``), a
missing atlas (error).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petbind.errors import ConfigError, DataError, MetadataError
from petbind.study.config import StudyConfig

_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")


def parse_entities(name: str) -> tuple[dict[str, str], str]:
    """BIDS entities and suffix of a file name.

    >>> parse_entities("sub-01_ses-baseline_trc-DASB_pet.nii.gz")
    ({'sub': '01', 'ses': 'baseline', 'trc': 'DASB'}, 'pet')
    """
    base = name.split(".", 1)[0]
    parts = base.split("_")
    entities: dict[str, str] = {}
    for p in parts[:-1]:
        m = _ENTITY.match(p)
        if m:
            entities[m.group(1)] = m.group(2)
    return entities, parts[-1]


@dataclass(frozen=True)
class Scan:
    """One dynamic PET scan of the study.

    Attributes
    ----------
    subject, condition, tracer : str
        Labels (without ``sub-`` etc.).
    run : str or None
        ``run-`` label, if any.
    pet : Path
        The 4D image.
    dseg : Path
        Atlas in PET space (``*_dseg.nii.gz``); its ``_dseg.tsv`` lies beside it.
    stem : str
        File name of ``pet`` without ``_pet.nii[.gz]``; output names start with it.
    rel_dir : str
        Folder of ``pet`` relative to the BIDS root (``sub-01/ses-baseline/pet``).
    image : Path or None
        The image the models fit when it is not ``pet`` (the motion-corrected
        ``*_desc-mc_pet.nii.gz`` of preprocessing).
    noisefree : Path or None
        The simulator's ``*_desc-noisefree_tacs.tsv`` of this scan (region
        means of the noise-free, blurred, motion-free image over the true
        atlas), when it exists and ``dataset.truth`` is not ``"none"``.
    """

    subject: str
    condition: str
    tracer: str
    run: str | None
    pet: Path
    dseg: Path
    stem: str
    rel_dir: str
    entities: dict[str, str] = field(default_factory=dict, compare=False)
    image: Path | None = None
    noisefree: Path | None = None
    #: The subject's T1w-space segmentation (:class:`petbind.study.segmentation.Segmentation`)
    #: when ``dataset.segmentation`` is set; then ``dseg`` is its label image.
    segmentation: Any = None

    @property
    def fit_pet(self) -> Path:
        """The 4D image the models fit (``image`` when preprocessed, else ``pet``)."""
        return self.image if self.image is not None else self.pet

    @property
    def fit_sidecar(self) -> Path:
        """The JSON sidecar of :attr:`fit_pet`."""
        p = self.fit_pet
        return p.with_name(p.name.split(".", 1)[0] + ".json")

    @property
    def dseg_tsv(self) -> Path:
        """The label table beside the atlas (the segmentation's table when there is one)."""
        if self.segmentation is not None:
            return Path(self.segmentation.table)
        return self.dseg.with_name(self.dseg.name.split(".", 1)[0] + ".tsv")

    @property
    def sidecar(self) -> Path:
        """The JSON sidecar of the PET image."""
        return self.pet.with_name(self.pet.name.split(".", 1)[0] + ".json")

    @property
    def key(self) -> str:
        """``sub-01 ses-baseline trc-DASB [run-1]`` for messages."""
        r = f" run-{self.run}" if self.run else ""
        return f"sub-{self.subject} {self.condition} trc-{self.tracer}{r}"


def _atlas_roots(bids: Path, config: StudyConfig, out_dir: Path | None) -> list[Path]:
    if config.atlas != "auto":
        root = Path(config.atlas)
        root = root if root.is_absolute() else bids / root
        if not root.is_dir():
            raise ConfigError("the atlas folder does not exist", path=root,
                              field="dataset.atlas",
                              fix="give a derivatives folder holding *_dseg.nii.gz, or 'auto'")
        return [root]
    deriv = bids / "derivatives"
    if not deriv.is_dir():
        return []
    skip = {(deriv / "petbind").resolve()}
    if out_dir is not None:
        skip.add(Path(out_dir).resolve())
    return [d for d in sorted(deriv.iterdir())
            if d.is_dir() and d.resolve() not in skip]


def find_pet_files(bids: Path) -> list[Path]:
    """Every PET image (``sub-*/[ses-*/]pet/*_pet.nii[.gz]``) of a BIDS dataset, sorted.

    Raises
    ------
    DataError
        When ``bids`` is not a folder or holds no PET image.
    """
    if not bids.is_dir():
        raise DataError("the BIDS dataset folder does not exist", path=bids,
                        fix="give the folder holding dataset_description.json and sub-*/")
    pets = sorted(p for p in bids.glob("sub-*/**/pet/*_pet.nii*")
                  if p.name.endswith((".nii", ".nii.gz")))
    if not pets:
        raise DataError("no PET scans (sub-*/[ses-*/]pet/*_pet.nii.gz) found", path=bids,
                        field="sub-*/pet", fix="point to the root of a BIDS-PET dataset")
    return pets


def discover_scans(bids_dir: str | os.PathLike, config: StudyConfig, *,
                   out_dir: str | os.PathLike | None = None) -> tuple[list[Scan], list[str]]:
    """The study's scans and the warnings about its design.

    Parameters
    ----------
    bids_dir : path
        BIDS root.
    config : StudyConfig
    out_dir : path, optional
        The pipeline's output folder (never searched for atlases). With
        ``preprocess.enabled`` the atlas of a scan is the one preprocessing
        writes under ``OUT/preprocess/`` (it need not exist yet) and the
        fitted image is the motion-corrected one.

    Returns
    -------
    scans : list of Scan
        Sorted by tracer, subject, condition, run. With ``statistics.runs =
        "first"`` only the lowest run of each subject x condition x tracer.
    warnings : list of str
        Scans skipped (tracer not configured), subjects missing a condition.

    Raises
    ------
    DataError
        No PET scans; a scan without atlas; two runs where one is expected.
    MetadataError
        A PET file name without the condition or tracer entity.
    ConfigError
        A contrast naming a condition no scan of a tracer has.
    """
    bids = Path(bids_dir)
    pets = find_pet_files(bids)
    prep = config.preprocess.enabled
    out_root = Path(out_dir) if out_dir is not None else bids / "derivatives" / "petbind"
    own_seg = bool(config.data.segmentation)
    roots = [] if prep or own_seg else _atlas_roots(bids, config, out_dir)
    segs: dict[str, Any] = {}
    conditions = ConditionTable(bids, config)
    warnings: list[str] = []
    scans: list[Scan] = []
    skipped_tracers: dict[str, int] = {}
    ent_name = config.condition_entity
    for pet in pets:
        ents, _ = parse_entities(pet.name)
        if any(ents.get(k) != v for k, v in config.data.select.items()):
            continue
        for key, what in (("sub", "subject"), (ent_name, "condition"), ("trc", "tracer")):
            if key == ent_name and config.data.condition:
                continue
            if key not in ents:
                raise MetadataError(
                    f"the file name has no '{key}-' entity, so its {what} is unknown",
                    path=pet, field=key,
                    fix=f"name PET files ..._{key}-<label>_pet.nii.gz"
                    + (", set dataset.condition_entity, or take conditions from a table "
                       "(dataset.condition = \"sessions.tsv:<column>\" or "
                       "\"participants.tsv:<column>\")" if what == "condition" else ""))
        tracer = ents["trc"]
        if tracer not in config.tracers:
            skipped_tracers[tracer] = skipped_tracers.get(tracer, 0) + 1
            continue
        stem = pet.name.split(".", 1)[0].removesuffix("_pet")
        rel = pet.parent.relative_to(bids).as_posix()
        dseg = image = None
        if prep:
            from petbind.study.preprocess import preprocess_files

            files = preprocess_files(out_root, rel, stem, config.preprocess.motion)
            dseg, image = files["dseg"], files.get("pet_mc")
        seg = None
        if own_seg:
            from petbind.study.segmentation import find_segmentation

            if ents["sub"] not in segs:
                segs[ents["sub"]] = find_segmentation(bids, ents["sub"],
                                                      config.data.segmentation,
                                                      config.data.segmentation_labels)
            seg = segs[ents["sub"]]
            dseg = seg.path
        for root in roots:
            for ext in (".nii.gz", ".nii"):
                cand = root / rel / f"{stem}_dseg{ext}"
                if cand.exists():
                    dseg = cand
                    break
            if dseg is not None:
                break
        if dseg is None:
            where = (str(roots[0] / rel / f"{stem}_dseg.nii.gz") if roots
                     else str(bids / "derivatives"))
            raise DataError(f"no atlas for {pet.name}", path=where, field="dataset.atlas",
                            fix="put the scan's *_dseg.nii.gz (+ _dseg.tsv) in PET space "
                            "under derivatives/<pipeline>/ with the same folder and stem")
        noisefree = bids / "derivatives" / "petbind-sim" / rel / f"{stem}_desc-noisefree_tacs.tsv"
        scans.append(Scan(subject=ents["sub"], condition=conditions.of(pet, ents),
                          tracer=tracer, run=ents.get("run"), pet=pet, dseg=dseg, stem=stem,
                          rel_dir=rel, entities=ents, image=image, segmentation=seg,
                          noisefree=(noisefree if config.truth != "none" and noisefree.is_file()
                                     else None)))
    for t, n in sorted(skipped_tracers.items()):
        warnings.append(f"skipped {n} scan(s) of tracer trc-{t}: no [tracers.{t}] in the "
                        "study config")
    if not scans:
        raise ConfigError(f"no scan of a configured tracer ({', '.join(config.tracers)})",
                          path=config.source, field="tracers",
                          fix=f"configure the dataset's tracers: {sorted(skipped_tracers)}")
    scans = _resolve_runs(scans, config, warnings)
    _check_design(scans, config, warnings)
    scans.sort(key=lambda s: (s.tracer, s.subject, s.condition, s.run or ""))
    return scans, warnings


def _resolve_runs(scans: list[Scan], config: StudyConfig, warnings: list[str]) -> list[Scan]:
    groups: dict[tuple[str, str, str], list[Scan]] = {}
    for s in scans:
        groups.setdefault((s.tracer, s.subject, s.condition), []).append(s)
    out: list[Scan] = []
    policy = config.statistics.runs
    for (tracer, subject, cond), group in sorted(groups.items()):
        if len(group) == 1:
            out.extend(group)
            continue
        names = ", ".join(s.pet.name for s in group)
        if policy == "error":
            raise DataError(
                f"{len(group)} scans of sub-{subject} {cond} trc-{tracer} where one is "
                f"expected: {names}", path=group[0].pet.parent, field="run",
                fix="set statistics.runs = \"mean\" or \"first\" in the study config, or "
                "remove the extra runs")
        group = sorted(group, key=lambda s: (int(s.run) if (s.run or "").isdigit()
                                             else float("inf"), s.run or ""))
        if policy == "first":
            warnings.append(f"sub-{subject} {cond} trc-{tracer}: {len(group)} runs, using "
                            f"the first ({group[0].pet.name}) as statistics.runs = 'first'")
            out.append(group[0])
        else:
            warnings.append(f"sub-{subject} {cond} trc-{tracer}: {len(group)} runs, BP_ND "
                            "averaged over runs as statistics.runs = 'mean'")
            out.extend(group)
    return out


def _check_design(scans: list[Scan], config: StudyConfig, warnings: list[str]) -> None:
    for tracer in config.tracers:
        have = [s for s in scans if s.tracer == tracer]
        if not have:
            warnings.append(f"tracer {tracer} is configured but has no scans")
            continue
        conds = {s.condition for s in have}
        for i, c in enumerate(config.contrasts):
            missing = [x for x in c.conditions if x not in conds]
            if missing:
                raise ConfigError(
                    f"contrast {c.expr!r} names condition(s) {missing} that no scan of "
                    f"tracer {tracer} has", path=config.source, field=f"contrasts[{i}]",
                    fix=f"use the conditions present: {', '.join(sorted(conds))}")
        used = {x for c in config.contrasts for x in c.conditions}
        subjects = sorted({s.subject for s in have})
        for subj in subjects:
            mine = {s.condition for s in have if s.subject == subj}
            for cond in sorted(used - mine):
                warnings.append(f"sub-{subj} has no {cond} scan of tracer {tracer}: it is "
                                f"left out of the contrasts that use {cond}")


class ConditionTable:
    """The condition of each scan: ``dataset.condition`` (a table column) or the entity label.

    ``"sessions.tsv:<column>"`` reads ``sub-<label>/sub-<label>_sessions.tsv``
    (rows by ``session_id``, e.g. ``ses-01``); ``"participants.tsv:<column>"``
    reads the dataset's ``participants.tsv`` (rows by ``participant_id``), for
    between-subject designs. Tables are read at their own path (a symbolic
    link is not followed to another dataset's folder).
    """

    def __init__(self, bids: Path, config: StudyConfig) -> None:
        self.bids = bids
        self.entity = config.condition_entity
        self.table, _, self.column = config.data.condition.partition(":")
        self._cache: dict[Path, Any] = {}
        self.source = config.source

    def _read(self, path: Path) -> Any:
        from petbind.io.tables import read_tsv

        if path not in self._cache:
            if not path.is_file():
                raise DataError(f"dataset.condition reads {self.table}, which does not exist",
                                path=path, field="dataset.condition",
                                fix=f"write {path.name} with a {self.column!r} column, or "
                                "remove dataset.condition to use the ses- labels")
            t = read_tsv(path)
            key = "session_id" if self.table == "sessions.tsv" else "participant_id"
            for col in (key, self.column):
                if col not in t.columns:
                    raise DataError(f"{path.name} has no {col!r} column", path=path,
                                    field="dataset.condition",
                                    fix=f"use one of its columns: {', '.join(t.columns)}")
            self._cache[path] = dict(zip(t[key].astype(str), t[self.column].astype(str),
                                         strict=True))
        return self._cache[path]

    def of(self, pet: Path, ents: dict[str, str]) -> str:
        """The condition of the scan ``pet`` with entities ``ents``."""
        if not self.table:
            return ents[self.entity]
        sub = ents["sub"]
        if self.table == "participants.tsv":
            rows, key, path = (self._read(self.bids / "participants.tsv"), f"sub-{sub}",
                               self.bids / "participants.tsv")
        else:
            if "ses" not in ents:
                raise MetadataError("dataset.condition reads sessions.tsv but the file name "
                                    "has no ses- entity", path=pet, field="ses",
                                    fix="name the sessions (ses-<label>) or use "
                                    "participants.tsv:<column>")
            path = self.bids / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
            rows, key = self._read(path), f"ses-{ents['ses']}"
        value = rows.get(key)
        if value is None or value in ("", "n/a", "nan"):
            raise DataError(f"{path.name} gives no {self.column!r} for {key}", path=path,
                            field="dataset.condition",
                            fix=f"add the row {key} with its {self.column}")
        return value
