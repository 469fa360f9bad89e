"""Write a simulated study as a BIDS-PET dataset with its truth in ``derivatives/``.

Layout: ``docs/developing.md``, section "Dataset and output layout". Every
file goes through :mod:`petbind.io.atomic` and is byte-reproducible: NIfTI
files are gzipped with a zero modification time and no file name, JSON and TSV
are written from sorted, rounded values, so the same config and seed give the
same bytes.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind import __version__
from petbind.io.atomic import write_atomic, write_json_atomic, write_text_atomic
from petbind.io.tables import write_tacs
from petbind.simulate.config import ANATOMY_DEFAULTS
from petbind.simulate.phantom import REGIONS
from petbind.tac import TACTable

if TYPE_CHECKING:
    from petbind.simulate.config import SimConfig
    from petbind.simulate.phantom import Phantom
    from petbind.simulate.records import Geometry, ScanTruth, SubjectAnatomy

BIDS_VERSION = "1.10.0"
#: gzip level for NIfTI files (1 is about 3x faster than 6 and 10 % larger on noisy PET).
GZIP_LEVEL = 1
PIPELINE = "petbind-sim"
#: Template name of the phantom (``tpl-<name>``) in ``derivatives/petbind-sim/template/``.
TEMPLATE = "petbindphantom"


def truth_root(dataset: str | Path) -> Path:
    """``DATASET/derivatives/petbind-sim``: where a simulated dataset keeps its truth."""
    return Path(dataset) / "derivatives" / PIPELINE


def true_map_path(dataset: str | Path, subject: str, condition: str, tracer: str,
                  param: str = "bpnd") -> Path:
    """A scan's true parametric map (``param``: ``bpnd`` or ``r1``) in the truth folder.

    ``sub-S/ses-C/pet/sub-S_ses-C_trc-T_desc-true_<param>.nii.gz`` under
    :func:`truth_root` (labels without ``sub-``/``ses-``/``trc-``).
    """
    stem = f"sub-{subject}_ses-{condition}_trc-{tracer}"
    return (truth_root(dataset) / f"sub-{subject}" / f"ses-{condition}" / "pet"
            / f"{stem}_desc-true_{param}.nii.gz")


def true_xfm_path(dataset: str | Path, subject: str) -> Path:
    """The true rigid transform of a subject from the template (native-position studies)."""
    return truth_root(dataset) / f"sub-{subject}" / "anat" / f"sub-{subject}_desc-true_xfm.json"


def nifti_bytes(data: ArrayLike, affine: ArrayLike, dtype: type | np.dtype = np.float32,
                gz: bool = True) -> bytes:
    """A NIfTI-1 file's bytes, reproducibly gzipped (``mtime = 0``, no name) when ``gz``.

    Spatial units are mm, time units seconds; qform and sform are the affine
    (code 1, scanner).
    """
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=GZIP_LEVEL, mtime=0) if gz else raw


def write_nifti(path: str | Path, data: ArrayLike, affine: ArrayLike,
                dtype: type | np.dtype = np.float32) -> Path:
    """Write a NIfTI-1 image (``.nii`` or ``.nii.gz``) atomically and reproducibly.

    :func:`petbind.io.bids.save_image` is reproducible too, but its gzip header
    says "unknown OS" (``0xff``) where this one says Unix (``0x03``); switching
    would change one byte of every image a given config and seed has always
    produced.
    """
    raw = nifti_bytes(data, affine, dtype, gz=str(path).endswith(".gz"))
    return write_atomic(path, lambda p: p.write_bytes(raw))


def _tsv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if not np.isfinite(v) else f"{v:.10g}"
        return str(v)

    lines = ["\t".join(columns)] + ["\t".join(cell(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


#: Sections added after the first release, at their defaults: left out of the
#: written design (it reads back to the same config) so that a default study
#: keeps the bytes it always had.
_LATER_DEFAULTS = {"anatomy": ANATOMY_DEFAULTS}


def _record(raw: dict[str, Any]) -> dict[str, Any]:
    """The design to write as ``simulate_config.toml``."""
    out = dict(raw)
    for key, default in _LATER_DEFAULTS.items():
        section = out.get(key)
        if section is not None and all(default.get(k, object()) == v
                                       for k, v in section.items()):
            del out[key]
    return out


def _remove(*paths: Path) -> None:
    """Delete files an earlier simulation in another mode left behind."""
    for p in paths:
        p.unlink(missing_ok=True)


class DatasetWriter:
    """Writes the files of one simulated study under ``root``.

    Parameters
    ----------
    cfg : SimConfig
    phantom : Phantom
        The template phantom (unpadded): the template files and, unless
        ``anatomy.native_position``, every subject's T1w.
    root : Path
        Dataset folder.
    """

    def __init__(self, cfg: SimConfig, phantom: Phantom, root: Path) -> None:
        self.cfg = cfg
        self.phantom = phantom
        self.root = Path(root)
        self.deriv = truth_root(self.root)

    # -- dataset level --------------------------------------------------------
    def write_dataset_files(self) -> None:
        """dataset_description, participants, README, T1w per subject, derivative header."""
        import tomli_w

        cfg = self.cfg
        # first, so that an interrupted run is recognised as a simulation and resumed
        write_text_atomic(self.deriv / "simulate_config.toml", tomli_w.dumps(_record(cfg.raw)))
        write_json_atomic(self.root / "dataset_description.json", {
            "Name": "petbind simulated study",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["petbind simulator"],
            "GeneratedBy": [{"Name": "petbind simulate", "Version": __version__}],
        })
        write_text_atomic(self.root / "participants.tsv", _tsv(
            ["participant_id", "species"],
            [[f"sub-{s}", "Macaca mulatta"] for s in cfg.subjects]))
        write_json_atomic(self.root / "participants.json", {
            "species": {"Description": "species of the subject"}})
        write_text_atomic(self.root / "README", _README.format(
            n_subjects=len(cfg.subjects), conditions=", ".join(cfg.conditions),
            tracers=", ".join(t.name for t in cfg.tracers), seed=cfg.seed))
        ph = self.phantom
        t1w = nifti_bytes(ph.t1w, ph.affine)
        if not cfg.native_position:
            for s in cfg.subjects:
                anat = self.root / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz"
                write_atomic(anat, lambda p, b=t1w: p.write_bytes(b))
                self._t1w_sidecar(anat, "synthetic T1-weighted image of the procedural "
                                  "phantom")
                _remove(self._xfm_path(s))
        tpl = self.deriv / "template" / f"tpl-{TEMPLATE}"
        write_atomic(tpl.with_name(f"{tpl.name}_T1w.nii.gz"), lambda p: p.write_bytes(t1w))
        write_nifti(tpl.with_name(f"{tpl.name}_dseg.nii.gz"), ph.labels, ph.affine,
                    dtype=np.int16)
        write_text_atomic(tpl.with_name(f"{tpl.name}_dseg.tsv"), _tsv(
            ["index", "name", "region"], [list(row) for row in ph.table]))
        write_json_atomic(self.deriv / "dataset_description.json", {
            "Name": "petbind simulation truth",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "petbind simulate", "Version": __version__}],
            "SourceDatasets": [{"URL": "../.."}],
        })

    def _t1w_sidecar(self, anat: Path, description: str) -> None:
        name = anat.name.removesuffix(".nii.gz")
        write_json_atomic(anat.with_name(f"{name}.json"), {
            "Modality": "MR", "MagneticFieldStrength": 3,
            "Manufacturer": self.cfg.manufacturer, "Description": description})

    def _xfm_path(self, subject: str) -> Path:
        return true_xfm_path(self.root, subject)

    # -- per subject (native position) ----------------------------------------
    def write_subject(self, anatomy: SubjectAnatomy) -> None:
        """The moved T1w of a subject and its true transform from the template."""
        s = anatomy.subject
        anat = self.root / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz"
        write_nifti(anat, anatomy.t1w, anatomy.affine)
        self._t1w_sidecar(anat, "synthetic T1-weighted image of the procedural phantom, "
                          "moved to the subject's native position (truth: derivatives/"
                          f"{PIPELINE}/sub-{s}/anat/sub-{s}_desc-true_xfm.json)")
        write_json_atomic(self._xfm_path(s), {
            "Description": "true rigid transform of this subject from the template "
            f"(tpl-{TEMPLATE}) to its native position: x_native = Matrix @ x_template "
            "(homogeneous world mm, RAS); Matrix = rigid_matrix(Parameters, "
            "RotationCentre) of petbind.simulate.scanner: x -> R (x - c) + c + t, "
            "R = Rz Ry Rx about the RAS axes",
            "Parameters": [float(v) for v in anatomy.params],
            "ParameterNames": ["trans_x_mm", "trans_y_mm", "trans_z_mm",
                               "rot_x_deg", "rot_y_deg", "rot_z_deg"],
            "RotationCentre": [float(v) for v in anatomy.centre],
            "RotationCentreUnits": "mm (RAS, world)",
            "Matrix": [[float(v) for v in row] for row in anatomy.matrix],
            "FromSpace": f"tpl-{TEMPLATE}", "ToSpace": f"sub-{s} T1w and PET",
        })

    # -- per scan -------------------------------------------------------------
    def pet_sidecar(self, truth: ScanTruth) -> dict[str, Any]:
        """The BIDS-PET sidecar of a scan (all required fields)."""
        cfg, tr = self.cfg, truth.tracer
        side: dict[str, Any] = {
            "Manufacturer": cfg.manufacturer,
            "ManufacturersModelName": cfg.scanner_model,
            "Units": "kBq/mL",
            "BodyPart": "Brain",
            "TracerName": tr.name,
            "TracerRadionuclide": _radionuclide(tr.isotope.name),
            "InjectedRadioactivity": tr.injected_mbq,
            "InjectedRadioactivityUnits": "MBq",
            "InjectedMass": tr.injected_mass_ug,
            "InjectedMassUnits": "ug",
            "SpecificRadioactivity": tr.injected_mbq / tr.injected_mass_ug,
            "SpecificRadioactivityUnits": "MBq/ug",
            "ModeOfAdministration": "bolus",
            "TimeZero": "12:00:00",
            "ScanStart": 0,
            "InjectionStart": 0,
            **cfg.timing.to_bids(),
            "AcquisitionMode": "list mode",
            "ImageDecayCorrected": cfg.decay_corrected,
            "ImageDecayCorrectionTime": 0,
            "AttenuationCorrection": "none (simulated emission without attenuation)",
            "ReconMethodName": "simulated (analytic, no reconstruction)",
            "ReconMethodParameterLabels": ["none"],
            "ReconMethodParameterUnits": ["none"],
            "ReconMethodParameterValues": [0],
            "ReconFilterType": "Gaussian" if cfg.fwhm_mm > 0 else "none",
            "ReconFilterSize": cfg.fwhm_mm,
            "SimulationNoiseLevel": cfg.noise,
        }
        if cfg.decay_corrected:
            side["DecayCorrectionFactor"] = [
                float(x) for x in cfg.timing.decay_factors(tr.isotope)]
        return side

    def scan_dirs(self, truth: ScanTruth) -> tuple[Path, Path]:
        """(raw pet folder, derivative pet folder) of a scan."""
        rel = Path(f"sub-{truth.subject}") / f"ses-{truth.condition}" / "pet"
        return self.root / rel, self.deriv / rel

    def write_scan(self, truth: ScanTruth, image: NDArray, motion: NDArray | None,
                   geo: Geometry, noisefree: NDArray) -> None:
        """PET image + sidecar, and the scan's truth files.

        Parameters
        ----------
        truth : ScanTruth
        image : ndarray, shape (x, y, z, n_frames)
            The PET image (kBq/mL).
        motion : ndarray, shape (n_frames, 6), or None
            True frame motion.
        geo : Geometry
            The scan's geometry (the subject's in native position).
        noisefree : ndarray, shape (n_regions, n_frames)
            :func:`~petbind.simulate.study.noisefree_tacs` of the scan.
        """
        pet, der = self.scan_dirs(truth)
        stem = truth.stem
        write_nifti(pet / f"{stem}_pet.nii.gz", image, geo.affine)
        write_json_atomic(pet / f"{stem}_pet.json", self.pet_sidecar(truth))

        # native position: the truth atlas must not look like an atlas to use
        dseg = f"{stem}_desc-true_dseg" if self.cfg.native_position else f"{stem}_dseg"
        other = f"{stem}_dseg" if self.cfg.native_position else f"{stem}_desc-true_dseg"
        _remove(der / f"{other}.nii.gz", der / f"{other}.tsv")
        write_nifti(der / f"{dseg}.nii.gz", geo.dseg, geo.affine, dtype=np.int16)
        write_text_atomic(der / f"{dseg}.tsv", _tsv(
            ["index", "name", "region"], [list(row) for row in geo.phantom.table]))
        region_of_label = np.concatenate([[-1], geo.label_region])[geo.dseg]
        inside = region_of_label >= 0
        for key, values in (("bpnd", truth.bp_nd), ("r1", truth.r1)):
            lut = np.array([values[r] for r in REGIONS], dtype=np.float32)
            vol = np.where(inside, lut[np.maximum(region_of_label, 0)], 0.0)
            true_map = true_map_path(self.root, truth.subject, truth.condition,
                                     truth.tracer.name, key)
            write_nifti(true_map, vol, geo.affine)
            write_json_atomic(true_map.with_name(f"{stem}_desc-true_{key}.json"), {
                "Description": f"true {'BP_ND' if key == 'bpnd' else 'R1'} per region of "
                "the PET-space atlas (0 outside the brain)",
                "Units": "unitless", "Sources": [f"{dseg}.nii.gz"]})
        t = self.cfg.timing
        write_tacs(der / f"{stem}_desc-true_tacs.tsv", TACTable(t, truth.tacs, REGIONS, metadata={
            "Description": "noise-free region curves (tissue + blood volume, before blur), "
            "frame means, decay-corrected to injection",
            "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
            "regions": list(REGIONS),
            "K1prime": truth.k1prime, "K1primeUnits": "mL/cm3/min",
            "k2prime": truth.k2prime, "k2primeUnits": "1/min",
            "k4": truth.tracer.k4, "k4Units": "1/min"}))
        write_tacs(der / f"{stem}_desc-noisefree_tacs.tsv", TACTable(
            t, noisefree, REGIONS, metadata={
                "Description": "region means of the noise-free, blurred, motion-free PET "
                f"image over the true PET-space atlas ({dseg}.nii.gz), left and right "
                "pooled: what a perfect pipeline measures in these regions",
                "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0,
                "regions": list(REGIONS), "Sources": [f"{dseg}.nii.gz"]}))
        if motion is not None:
            cols = ["frame_start", "trans_x_mm", "trans_y_mm", "trans_z_mm",
                    "rot_x_deg", "rot_y_deg", "rot_z_deg"]
            rows = [[float(s), *map(float, m)] for s, m in zip(t.start_s, motion, strict=True)]
            write_text_atomic(der / f"{stem}_desc-true_motion.tsv", _tsv(cols, rows))
            centre = geo.affine @ np.append((np.array(geo.shape) - 1) / 2.0, 1.0)
            write_json_atomic(der / f"{stem}_desc-true_motion.json", {
                "Description": "true rigid head motion per frame: x -> R (x - c) + c + t, "
                "R = Rz Ry Rx (right-handed about the RAS axes), applied to the "
                "noise-free frame before noise",
                "RotationCentre": [float(v) for v in centre[:3]],
                "RotationCentreUnits": "mm (RAS, world)",
                "frame_start": {"Units": "s"},
                **{c: {"Units": "mm"} for c in cols[1:4]},
                **{c: {"Units": "degrees"} for c in cols[4:]}})

    def write_truth_table(self, truths: Sequence[ScanTruth]) -> Path:
        """``truth.tsv``: subject, condition, tracer, region, bp_nd, r1, k2prime."""
        rows = [[tr.subject, tr.condition, tr.tracer.name, r, tr.bp_nd[r], tr.r1[r],
                 tr.k2prime] for tr in truths for r in REGIONS]
        path = self.deriv / "truth.tsv"
        write_text_atomic(path, _tsv(
            ["subject", "condition", "tracer", "region", "bp_nd", "r1", "k2prime"], rows))
        write_json_atomic(self.deriv / "truth.json", {
            "subject": {"Description": "subject label (without 'sub-')"},
            "condition": {"Description": "session label (without 'ses-')"},
            "tracer": {"Description": "trc- label"},
            "bp_nd": {"Description": "true BP_ND = k3/k4", "Units": "unitless"},
            "r1": {"Description": "true R1 = K1/K1'", "Units": "unitless"},
            "k2prime": {"Description": "reference-region efflux k2'", "Units": "1/min"},
        })
        return path


def _radionuclide(name: str) -> str:
    """BIDS spelling of a radionuclide, e.g. ``11C`` -> ``C11``."""
    digits = "".join(c for c in name if c.isdigit())
    letters = "".join(c for c in name if c.isalpha())
    return f"{letters}{digits}"


_README = """petbind simulated study
=======================

Written by `petbind simulate` (seed {seed}): {n_subjects} subjects, conditions
(sessions) {conditions}, tracers (trc-) {tracers}. The truth (true BP_ND, R1
and k2' per scan and region, noise-free region curves, atlas in PET space) is
in derivatives/petbind-sim/. The images are synthetic; no animal was scanned.
"""

