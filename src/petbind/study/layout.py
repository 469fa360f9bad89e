"""The output layout of a study run, as code: every file's name, and how it is read back.

``petbind run`` writes its outputs through this module and the report reads
them through it, so the two cannot disagree on a name (docs/outputs.md
describes the same files in prose). A scan's outputs lie in the folder that
mirrors its input folder (``sub-*/[ses-*/]pet``) and start with the scan's
stem, which keeps every BIDS entity of the input name (``rec-``, ``acq-``,
``task-``, ``run-`` ...); which scans a run produced, and what their subject,
condition, tracer and run are, is read from ``group/provenance.json`` (else
from each scan's ``_provenance.json``), never parsed back from a file name.

Adding an output file is one line here (a property of :class:`ScanOutputs` or
:class:`StudyLayout`) and its use at the writer and reader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``Name`` of the outputs' dataset_description.json (marks a folder as petbind's).
OUTPUT_NAME = "petbind outputs"


@dataclass(frozen=True)
class ScanOutputs:
    """The output files of one scan.

    Parameters
    ----------
    root : Path
        Output root (``BIDS_DIR/derivatives/petbind`` or ``--out``).
    rel_dir : str
        Folder of the scan relative to the root (``sub-01/ses-01/pet``).
    stem : str
        The PET file name without ``_pet.nii[.gz]``, every entity kept.
    """

    root: Path
    rel_dir: str
    stem: str

    @property
    def folder(self) -> Path:
        """``ROOT/sub-*/[ses-*/]pet``."""
        return Path(self.root) / self.rel_dir

    def file(self, suffix: str) -> Path:
        """``FOLDER/STEM_<suffix>``."""
        return self.folder / f"{self.stem}_{suffix}"

    @property
    def tacs(self) -> Path:
        """Region time-activity curves (``STEM_tacs.tsv``, kBq/mL, seconds)."""
        return self.file("tacs.tsv")

    @property
    def tacs_json(self) -> Path:
        """Sidecar of the curves (``STEM_tacs.json``)."""
        return self.file("tacs.json")

    @property
    def fits(self) -> Path:
        """One row per region x model (``STEM_fits.tsv``)."""
        return self.file("fits.tsv")

    @property
    def fitted(self) -> Path:
        """Measured and fitted curves (``STEM_desc-fitted_tacs.tsv``)."""
        return self.file("desc-fitted_tacs.tsv")

    @property
    def noisefree_fits(self) -> Path:
        """The primary model on the simulator's noise-free curves (simulated studies)."""
        return self.file("desc-noisefree_fits.tsv")

    @property
    def provenance(self) -> Path:
        """The scan's provenance record (``STEM_provenance.json``, written last)."""
        return self.file("provenance.json")

    def map(self, model: str, param: str, space: str | None = None) -> Path:
        """A parametric map: ``STEM_[space-<s>_]model-<m>_<param>.nii.gz``."""
        sp = f"space-{space}_" if space else ""
        return self.file(f"{sp}model-{model}_{param}.nii.gz")

    def maps(self, param: str, space: str | None = None) -> dict[str, Path]:
        """The maps of ``param`` that exist, by model."""
        head = f"{self.stem}_space-{space}_model-" if space else f"{self.stem}_model-"
        out = {}
        for p in sorted(self.folder.glob(f"{head}*_{param}.nii*")):
            model = p.name[len(head):].split("_", 1)[0]
            out[model] = p
        return out


@dataclass(frozen=True)
class ListedScan:
    """A scan of a finished run as its provenance lists it."""

    subject: str
    condition: str
    tracer: str
    run: str | None
    files: ScanOutputs
    pet: str | None = None

    @property
    def stem(self) -> str:
        return self.files.stem


@dataclass(frozen=True)
class StudyLayout:
    """The study-level output files under one root."""

    root: Path

    @property
    def description(self) -> Path:
        return Path(self.root) / "dataset_description.json"

    @property
    def config(self) -> Path:
        """The resolved study config of the run (``study_config.toml``)."""
        return Path(self.root) / "study_config.toml"

    @property
    def report(self) -> Path:
        return Path(self.root) / "report.html"

    @property
    def group(self) -> Path:
        return Path(self.root) / "group"

    @property
    def outcomes(self) -> Path:
        return self.group / "outcomes.tsv"

    @property
    def roi_stats(self) -> Path:
        return self.group / "roi_stats.tsv"

    @property
    def mixed_model(self) -> Path:
        return self.group / "mixed_model.tsv"

    @property
    def summary(self) -> Path:
        return self.group / "summary.json"

    @property
    def provenance(self) -> Path:
        return self.group / "provenance.json"

    @property
    def voxel(self) -> Path:
        return self.group / "voxel"

    def voxel_prefix(self, tracer: str, model: str, contrast: str) -> Path:
        """``group/voxel/trc-<t>_model-<m>_contrast-<c>`` (``_stat-t.nii.gz`` ... follow)."""
        return self.voxel / f"trc-{tracer}_model-{model}_contrast-{contrast}"

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, as the summary lists it."""
        return Path(path).relative_to(self.root).as_posix()

    def scan(self, rel_dir: str, stem: str) -> ScanOutputs:
        """The files of the scan whose input lies in ``rel_dir`` with ``stem``."""
        return ScanOutputs(Path(self.root), rel_dir, stem)

    def scan_entry(self, subject: str, condition: str, tracer: str, run: str | None,
                   rel_dir: str, stem: str, pet: str) -> dict[str, Any]:
        """The record of one scan in ``group/provenance.json`` (read by :meth:`scans`)."""
        return {"subject": subject, "condition": condition, "tracer": tracer, "run": run,
                "pet": pet, "rel_dir": rel_dir, "stem": stem,
                "provenance": self.relative(self.scan(rel_dir, stem).provenance)}

    def scans(self) -> list[ListedScan]:
        """The scans of the run, from ``group/provenance.json``, else the scans' own records.

        Entities are never parsed from file names: a stem may carry any BIDS
        entity, and a condition may come from ``sessions.tsv`` rather than
        the ``ses-`` label.
        """
        listed = read_json(self.provenance).get("scans") if self.provenance.is_file() else None
        out: list[ListedScan] = []
        if isinstance(listed, list) and listed:
            for e in listed:
                if not isinstance(e, dict):
                    continue
                rel, stem = _where(e)
                if rel is None:
                    continue
                out.append(ListedScan(str(e.get("subject")), str(e.get("condition")),
                                      str(e.get("tracer")), _run(e.get("run")),
                                      self.scan(rel, stem), e.get("pet")))
            return out
        for prov in sorted(Path(self.root).glob("sub-*/**/*_provenance.json")):
            rel = prov.parent.relative_to(self.root).as_posix()
            if rel.startswith("preprocess/"):
                continue
            stem = prov.name[: -len("_provenance.json")]
            rec = read_json(prov).get("scan") or {}
            if not rec:
                continue
            out.append(ListedScan(str(rec.get("subject")), str(rec.get("condition")),
                                  str(rec.get("tracer")), _run(rec.get("run")),
                                  self.scan(rel, stem), None))
        return out

    def read_config(self) -> tuple[Any, str]:
        """The run's study config parsed by :func:`petbind.study.config.parse_config`.

        Returns
        -------
        config : StudyConfig or None
            None when the folder has no ``study_config.toml``.
        text : str
            The file's text ("" when absent).
        """
        from petbind.io.tomlfile import read_toml_text
        from petbind.study.config import parse_config

        if not self.config.is_file():
            return None, ""
        data, text = read_toml_text(self.config, what="study config of the run",
                                    syntax_fix="rerun the pipeline to rewrite it")
        return parse_config(data, source=str(self.config)), text


def _run(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _where(entry: dict[str, Any]) -> tuple[str | None, str]:
    """(rel_dir, stem) of a listed scan: its own keys, else its provenance path."""
    if entry.get("rel_dir") and entry.get("stem"):
        return str(entry["rel_dir"]), str(entry["stem"])
    prov = entry.get("provenance")
    if not prov:
        return None, ""
    p = Path(str(prov))
    return p.parent.as_posix(), p.name.removesuffix("_provenance.json")


#: Columns holding labels: read as text, so subject "01" stays "01".
LABEL_COLUMNS = ("subject", "condition", "tracer", "run", "region", "model", "contrast",
                 "contrast_id", "kind", "peak_region")


def read_table(path: str | os.PathLike) -> Any:
    """A TSV the pipeline wrote, as a DataFrame: ``n/a`` is missing, labels stay text.

    Other strings (``NA``, ``null``) are kept; columns holding only
    ``true``/``false`` become booleans. Raises ``FileFormatError`` naming the
    file (:func:`petbind.io.tables.read_typed_tsv`).
    """
    from petbind.io.tables import read_typed_tsv

    return read_typed_tsv(path, LABEL_COLUMNS)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object written by the pipeline (:func:`petbind.io.tables.read_json`).

    Raises
    ------
    MetadataError
        The file is missing.
    FileFormatError
        It is not a JSON object (names the file, line and column).
    """
    from petbind.io.tables import read_json as _read

    return _read(path)


def read_image(path: str | os.PathLike) -> Any:
    """A 3-D image the pipeline wrote (map, mask, statistic) as float32, with affine and zooms.

    Returns :class:`petbind.io.images.Volume`; raises ``FileFormatError``
    naming a missing, truncated or damaged file
    (:func:`petbind.io.images.read_volume`).
    """
    from petbind.io.images import read_volume

    return read_volume(path)
