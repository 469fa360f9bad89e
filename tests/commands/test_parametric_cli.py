"""Tests of ``petbind parametric`` (src/petbind/commands/parametric.py), end to end.

The input is a BIDS-PET image written here with nibabel + json (no petbind
writer), holding the analytic one-tissue curves of a known BP_ND map.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from petbind.cli import main

SCHEDULE_S = [10.0] * 6 + [20.0] * 3 + [30.0] * 2 + [60.0] * 4 + [120.0] * 4 + [300.0] * 5 \
    + [600.0] * 5
START_S = np.concatenate([[0.0], np.cumsum(SCHEDULE_S)[:-1]])
END_S = START_S + np.array(SCHEDULE_S)
CP_A = np.array([40.0, 4.0, -44.0])       # plasma input, kBq/mL
CP_L = np.array([1.2137, 0.04321, 6.037])  # 1/min
K1_REF, K2_REF = 0.4, 0.1
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
STEM = "sub-01_ses-baseline_trc-DASB"


def one_tissue(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Exact frame means of K1 exp(-k2 t) (*) sum_i A_i exp(-l_i t)."""
    s, e = START_S / 60.0, END_S / 60.0

    def fm(r):
        r = np.asarray(r, float)[..., None]
        return (np.exp(-r * s) - np.exp(-r * e)) / (r * (e - s))

    out = sum((a / (k2 - lam))[..., None] * (fm(lam) - fm(k2))
              for a, lam in zip(CP_A, CP_L, strict=True))
    return k1[..., None] * out


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    shape = (6, 5, 4)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    bp = np.where(k > 0, 0.5 + 0.25 * ((i + 2 * j + k) % 9), 0.0)
    r1 = np.where(k > 0, 0.9 + 0.05 * (j % 4), 1.0)
    data = one_tissue(r1 * K1_REF, r1 * K2_REF / (1 + bp)).astype(np.float32)
    pet_dir = tmp_path / "bids" / "sub-01" / "ses-baseline" / "pet"
    pet_dir.mkdir(parents=True)
    pet = pet_dir / f"{STEM}_pet.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), pet)
    side = {
        "Manufacturer": "Siemens", "ManufacturersModelName": "HRRT", "Units": "kBq/mL",
        "TracerName": "DASB", "TracerRadionuclide": "C11",
        "InjectedRadioactivity": 100.0, "InjectedRadioactivityUnits": "MBq",
        "InjectedMass": 1.0, "InjectedMassUnits": "ug", "SpecificRadioactivity": 100.0,
        "SpecificRadioactivityUnits": "MBq/ug", "ModeOfAdministration": "bolus",
        "TimeZero": "10:00:00", "ScanStart": 0, "InjectionStart": 0,
        "FrameTimesStart": START_S.tolist(), "FrameDuration": SCHEDULE_S,
        "AcquisitionMode": "list mode", "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0, "ReconMethodName": "OSEM",
        "ReconMethodParameterLabels": ["subsets", "iterations"],
        "ReconMethodParameterUnits": ["none", "none"], "ReconMethodParameterValues": [16, 4],
        "ReconFilterType": "none", "AttenuationCorrection": "transmission",
    }
    (pet_dir / f"{STEM}_pet.json").write_text(json.dumps(side))
    atlas_dir = tmp_path / "atlas"
    atlas_dir.mkdir()
    atlas = atlas_dir / f"{STEM}_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.where(k == 0, 2, 1).astype(np.int16), AFFINE), atlas)
    (atlas_dir / f"{STEM}_dseg.tsv").write_text(
        "index\tname\tregion\n1\tstriatum_L\tstriatum\n2\tcerebellum_L\tcerebellum\n")
    return {"pet": pet, "atlas": atlas, "bp": bp, "ref": k == 0, "tmp": tmp_path}


def _files(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_parametric_command_writes_bpnd_map_that_recovers_truth(dataset, capsys):
    out = dataset["tmp"] / "maps"
    before = _files(dataset["pet"].parent)
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(dataset["pet"]), "--model", "mrtm2",
              "--ref-label", f"{dataset['atlas']}:cerebellum", "--k2prime", "0.1",
              "--out", str(out)])
    assert ex.value.code in (0, None)
    assert _files(dataset["pet"].parent) == before  # nothing written beside the input
    bp_path = out / f"{STEM}_desc-mrtm2_bpnd.nii.gz"
    assert str(bp_path) in capsys.readouterr().out
    bp_map = np.asanyarray(nib.load(bp_path).dataobj)
    target = ~dataset["ref"]
    np.testing.assert_allclose(bp_map[target], dataset["bp"][target], rtol=1e-3)
    side = json.loads((out / f"{STEM}_desc-mrtm2_bpnd.json").read_text())
    assert side["Model"] == "mrtm2" and side["K2Prime"] == pytest.approx(0.1)
    assert side["K2PrimeSource"]["method"] == "user"
    digest = hashlib.sha256(dataset["pet"].read_bytes()).hexdigest()
    assert side["InputHashes"][str(dataset["pet"])] == f"sha256:{digest}"
    assert side["Settings"]["reference"] == {"kind": "label", "atlas": str(dataset["atlas"]),
                                             "name": "cerebellum"}
    assert (out / f"{STEM}_desc-mrtm2_mask.nii.gz").exists()


def test_parametric_command_with_auto_k2prime_records_the_estimate(dataset, capsys):
    out = dataset["tmp"] / "maps"
    ref = dataset["tmp"] / "ref_mask.nii.gz"
    nib.save(nib.Nifti1Image(dataset["ref"].astype(np.uint8), AFFINE), ref)
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(dataset["pet"]), "--model", "srtm2", "--ref-mask", str(ref),
              "--out", str(out)])
    assert ex.value.code in (0, None)
    side = json.loads((out / f"{STEM}_desc-srtm2_bpnd.json").read_text())
    assert side["K2PrimeSource"]["method"] == "auto"
    assert side["K2PrimeSource"]["model"] == "srtm"
    assert 0.09 < side["K2Prime"] < 0.11


@pytest.mark.parametrize(("extra", "needle"), [
    (["--ref-mask", "WRONG"], "shape"),
    (["--ref-label", "ATLAS:pons"], "pons"),
    (["--ref-label", "ATLAS:cerebellum", "--ref-tac", "x.tsv:cb"], "exactly one reference"),
    (["--ref-label", "ATLAS:cerebellum", "--model", "2tcm"], "unknown model"),
    (["--ref-label", "ATLAS:cerebellum", "--k2prime", "fast"], "--k2prime"),
    (["--ref-label", "ATLAS:cerebellum", "--pet-fwhm=-2"], "--pet-fwhm"),
])
def test_parametric_command_bad_input_exits_2_with_a_one_line_error(dataset, capsys, extra,
                                                                     needle):
    wrong = dataset["tmp"] / "wrong_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.uint8), AFFINE), wrong)
    args = [a.replace("WRONG", str(wrong)).replace("ATLAS", str(dataset["atlas"]))
            for a in extra]
    out = dataset["tmp"] / "maps"
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(dataset["pet"]), *args, "--out", str(out)])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "fix:" in err and "Traceback" not in err
    assert not out.exists()


def test_parametric_command_takes_the_k2prime_region_from_an_atlas_label(dataset):
    out = dataset["tmp"] / "maps"
    atlas = dataset["atlas"]
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(dataset["pet"]), "--model", "mrtm2",
              "--ref-label", f"{atlas}:cerebellum", "--k2prime", "pooled",
              "--k2prime-region", f"{atlas}:striatum", "--out", str(out)])
    assert ex.value.code in (0, None)
    side = json.loads((out / f"{STEM}_desc-mrtm2_bpnd.json").read_text())
    src = side["K2PrimeSource"]
    assert src["method"] == "pooled" and src["region_rule"] == "user region"
    assert src["n_voxels"] == int((~dataset["ref"]).sum())
    assert side["K2Prime"] == pytest.approx(K2_REF, rel=2e-3)  # one-tissue voxels: exact


def test_parametric_command_pet_fwhm_smooths_before_the_fits_and_says_so(dataset):
    out = dataset["tmp"] / "maps"
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(dataset["pet"]), "--model", "mrtm2",
              "--ref-label", f"{dataset['atlas']}:cerebellum", "--k2prime", "0.1",
              "--pet-fwhm", "3", "--out", str(out)])
    assert ex.value.code in (0, None)
    for name in ("bpnd", "r1", "mask"):
        side = json.loads((out / f"{STEM}_desc-mrtm2_{name}.json").read_text())
        assert side["Settings"]["pet_smoothing"]["fwhm_mm"] == 3.0
    # the voxels' BP_ND varies from voxel to voxel: smoothing the curves changes the map
    bp_map = np.asanyarray(nib.load(out / f"{STEM}_desc-mrtm2_bpnd.nii.gz").dataobj)
    target = ~dataset["ref"]
    assert not np.allclose(bp_map[target], dataset["bp"][target], rtol=1e-2)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_parametric_command_refuses_a_damaged_gzip_scan_in_one_line(dataset, capsys, damage):
    """The scan is decompressed once (no separate verification pass); a CRC error in a
    stored block under an intact header, or a truncated file, still fails naming the file."""
    import gzip

    pet = dataset["pet"]
    raw = gzip.decompress(pet.read_bytes())
    body = bytearray(gzip.compress(raw, compresslevel=0, mtime=0))  # data bytes visible
    if damage == "flip":
        # RFC 1952 header (10 bytes), stored-block header (5), then the NIfTI bytes:
        # the first voxel's float32 at vox_offset 352; change one bit, keep the CRC
        at = 10 + 5 + 352
        assert bytes(body[at:at + 4]) == raw[352:356]
        body[at + 3] ^= 0x01
    else:
        body = body[: int(len(body) * 0.7)]
    pet.write_bytes(bytes(body))
    out = dataset["tmp"] / "maps"
    with pytest.raises(SystemExit) as ex:
        main(["parametric", str(pet), "--ref-label", f"{dataset['atlas']}:cerebellum",
              "--k2prime", "0.1", "--out", str(out)])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert str(pet.name) in err and "damaged" in err and "Traceback" not in err
    assert not out.exists()


# -- the scan is read ahead from the command line (commands.start_early, io.prefetch)
@pytest.mark.parametrize(("args", "pet"), [
    (["scan.nii.gz"], "scan.nii.gz"),
    (["--model", "srtm2", "--ref-label", "a.nii.gz:cb", "scan.nii.gz", "--out", "o"],
     "scan.nii.gz"),
    (["--model=srtm2", "scan.nii", "--mask", "m.nii.gz"], "scan.nii"),
    (["--out", "o", "--", "-odd.nii.gz"], "-odd.nii.gz"),
    (["--out", "o"], None),
])
def test_the_pet_argument_is_found_among_the_options(args, pet):
    from petbind.commands.parametric import _pet_argument

    assert _pet_argument(args) == pet


def test_every_option_of_parametric_takes_a_value():
    # _pet_argument skips one value after every option word: a flag would break that
    import typer.main

    from petbind.cli import app

    group = typer.main.get_command(app)
    command = group.commands["parametric"]
    flags = [p.name for p in command.params
             if getattr(p, "is_flag", False) and p.name != "help"]
    assert flags == []
    assert any(getattr(p, "param_type_name", "") == "option" for p in command.params)


def test_the_scan_is_read_ahead_and_taken_by_the_command(dataset, monkeypatch):
    from petbind.io import prefetch

    taken: list[object] = []
    real = prefetch.take

    def spy(path):
        s = real(path)
        taken.append(s)
        return s

    monkeypatch.setattr(prefetch, "take", spy)
    out = dataset["tmp"] / "out_ahead"
    with pytest.raises(SystemExit) as done:
        main(["parametric", str(dataset["pet"]), "--model", "mrtm2", "--k2prime", "0.1",
              "--ref-label", f"{dataset['atlas']}:cerebellum", "--out", str(out)])
    assert done.value.code in (0, None)
    assert any(isinstance(s, prefetch.PrefetchedStream) for s in taken)
    assert prefetch.pending() == []


def test_help_and_a_refused_option_leave_no_read_ahead(dataset, capsys, monkeypatch):
    from petbind.io import prefetch

    started: list[str] = []
    real = prefetch.start

    def spy(path):
        started.append(str(path))
        return real(path)

    monkeypatch.setattr(prefetch, "start", spy)
    with pytest.raises(SystemExit):
        main(["parametric", str(dataset["pet"]), "--help"])
    assert started == [] and prefetch.pending() == []
    with pytest.raises(SystemExit) as bad:
        main(["parametric", str(dataset["pet"]), "--ref-tac", "x.tsv:cb",
              "--scheduler", "bogus-word", "--out", str(dataset["tmp"] / "o")])
    assert bad.value.code == 2
    assert started == [str(dataset["pet"])]
    assert prefetch.pending() == []  # started, never taken, dropped at the CLI's exit


def test_the_command_on_its_default_scheduler_imports_no_dask(dataset):
    # the default 'threads' scheduler is a pool of this process's threads (issue 18)
    import os
    import subprocess
    import sys

    import petbind

    src = str(Path(petbind.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "petbind", "parametric",
         str(dataset["pet"]), "--model", "mrtm2", "--k2prime", "0.1",
         "--ref-label", f"{dataset['atlas']}:cerebellum",
         "--out", str(dataset["tmp"] / "out_nodask")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": src})
    assert done.returncode == 0, done.stderr[-2000:]
    traced = {ln.rsplit("|", 1)[-1].strip() for ln in done.stderr.splitlines()
              if ln.startswith("import time:")}
    assert "petbind.parametric.core" in traced
    assert not sorted(m for m in traced if m.split(".")[0] in ("dask", "distributed"))
    assert (dataset["tmp"] / "out_nodask" / f"{STEM}_desc-mrtm2_bpnd.nii.gz").exists()
