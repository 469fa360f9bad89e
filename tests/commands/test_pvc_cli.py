"""``petbind pvc`` end to end on a simulated scan (src/petbind/commands/pvc.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from petbind.cli import main
from petbind.io.bids import load_pet


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """One noise-free DASB scan of the simulator (2 mm voxels, 2.8 mm PSF)."""
    import tomllib

    from petbind.simulate.config import default_config_text, parse_config
    from petbind.simulate.study import simulate_study

    raw = tomllib.loads(default_config_text())
    raw.update(subjects=1, tracers=["DASB"], conditions=["baseline"])
    raw["scanner"].update(noise=0.0)
    bids = tmp_path_factory.mktemp("pvccli") / "bids"
    simulate_study(parse_config(raw), bids)
    pet = next(bids.glob("sub-01/ses-baseline/pet/*_pet.nii.gz"))
    tpl = bids / "derivatives/petbind-sim/template/tpl-petbindphantom_dseg.nii.gz"
    true = next(bids.glob("derivatives/petbind-sim/sub-01/ses-baseline/pet/*_desc-true_tacs.tsv"))
    return pet, tpl, true


def test_gtm_writes_corrected_tacs_with_the_psf_and_recovery(scan, tmp_path, capsys):
    pet, tpl, true = scan
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ex:
        main(["pvc", str(pet), "--dseg", str(tpl), "--out", str(out)])
    assert ex.value.code in (0, None)
    tsv = out / pet.name.replace("_pet.nii.gz", "_desc-pvc_tacs.tsv")
    assert capsys.readouterr().out.strip() == str(tsv)
    got = pd.read_csv(tsv, sep="\t")
    want = pd.read_csv(true, sep="\t")
    for region in ("NAcc", "VP", "putamen", "cerebellum"):
        np.testing.assert_allclose(got[region], want[region], rtol=0.01)
    info = json.loads(tsv.with_suffix(".json").read_text())["PartialVolumeCorrection"]
    assert info["PSF"]["FWHMmm"] == [2.8] * 3 and "ReconFilterSize" in info["PSF"]["Source"]
    assert info["RecoveryCoefficient"]["NAcc"] < 0.6 and info["GTMConditionNumber"] > 1


def test_rbv_writes_a_corrected_image_that_loads_as_pet(scan, tmp_path):
    pet, tpl, _ = scan
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ex:
        main(["pvc", str(pet), "--dseg", str(tpl), "--method", "rbv", "--fwhm-mm", "2.8",
              "--out", str(out)])
    assert ex.value.code in (0, None)
    img = load_pet(out / pet.name.replace("_pet.nii.gz", "_desc-pvc_pet.nii.gz"))
    raw = load_pet(pet)
    assert img.shape == raw.shape
    np.testing.assert_allclose(img.timing.start, raw.timing.start, atol=1e-6)


@pytest.mark.parametrize("args, field", [
    (["--method", "pve"], "--method"),
    (["--fwhm-mm", "2.8,x"], "--fwhm-mm"),
    (["--fwhm-mm", "2,3"], "--fwhm-mm"),
])
def test_errors_are_one_line(scan, tmp_path, capsys, args, field):
    pet, tpl, _ = scan
    with pytest.raises(SystemExit) as e:
        main(["pvc", str(pet), "--dseg", str(tpl), "--out", str(tmp_path / "o"), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_refuses_to_write_into_the_input_folder(scan, capsys):
    pet, tpl, _ = scan
    with pytest.raises(SystemExit):
        main(["pvc", str(pet), "--dseg", str(tpl), "--out", str(pet.parent)])
    assert "--out" in capsys.readouterr().err


def test_unknown_psf_names_the_option_and_the_sidecar(scan, tmp_path, capsys):
    import shutil

    pet, tpl, _ = scan
    copy = tmp_path / "in" / pet.name
    copy.parent.mkdir()
    shutil.copyfile(pet, copy)
    side = json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())
    side.pop("ReconFilterSize")
    side["ReconFilterType"] = "none"
    copy.with_name(copy.name.replace(".nii.gz", ".json")).write_text(json.dumps(side))
    with pytest.raises(SystemExit) as e:
        main(["pvc", str(copy), "--dseg", str(tpl), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--fwhm-mm" in err and "_pet.json" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_an_atlas_off_the_pet_grid_is_named_with_its_field(scan, tmp_path, capsys):
    """An atlas that neither equals nor refines the PET grid: one line naming the file."""
    import nibabel as nib

    pet, tpl, _ = scan
    img = nib.load(tpl)
    shifted = img.affine.copy()
    shifted[:3, 3] += 0.5  # half a millimetre off: no longer nested in the 2 mm grid
    bad = tmp_path / "atlas" / tpl.name
    bad.parent.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), bad)
    (bad.parent / tpl.name.replace(".nii.gz", ".tsv")).write_bytes(
        tpl.with_name(tpl.name.replace(".nii.gz", ".tsv")).read_bytes())
    with pytest.raises(SystemExit) as e:
        main(["pvc", str(pet), "--dseg", str(bad), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(bad) in err and "'affine'" in err and "fix:" in err
