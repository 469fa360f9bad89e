"""petbind.study.init and `petbind init`: a valid, commented config with the lab's names."""

from __future__ import annotations

import json
import tomllib

from tests.commands._fit_cli import cli_output as _cli

from petbind.study.config import parse_config
from petbind.study.init import config_text, region_groups, survey


def _dataset(root, sessions_tsv=True, labels=("placebo", "drug")):
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    for sub in ("01", "02"):
        rows = ["session_id\tcondition\tage"]
        for i, cond in enumerate(labels, 1):
            ses = f"{i:02d}" if sessions_tsv else cond
            d = root / f"sub-{sub}" / f"ses-{ses}" / "pet"
            d.mkdir(parents=True)
            stem = f"sub-{sub}_ses-{ses}_trc-FLB457_rec-acdyn"
            (d / f"{stem}_pet.nii.gz").write_bytes(b"")
            (d / f"{stem}_pet.json").write_text(json.dumps({"TracerName": "[11C]FLB457"}))
            rows.append(f"ses-{ses}\t{cond}\t{30 + i}")
        if sessions_tsv:
            (root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text("\n".join(rows) + "\n")
        seg = root / "derivatives" / "fs" / f"sub-{sub}" / "anat"
        seg.mkdir(parents=True)
        _label_image(seg / f"sub-{sub}_desc-aparcaseg_dseg.nii.gz")
    (root / "derivatives" / "fs" / "desc-aparcaseg_dseg.tsv").write_text(
        "index\tname\n2\tLeft-Cerebral-White-Matter\n8\tLeft-Cerebellum-Cortex\n"
        "47\tRight-Cerebellum-Cortex\n12\tLeft-Putamen\n51\tRight-Putamen\n16\tBrain-Stem\n")


def _label_image(path):
    import nibabel as nib
    import numpy as np

    lab = np.array([2, 8, 47, 12, 51, 16], np.int32).reshape(6, 1, 1)
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(path))


def test_region_groups_pool_left_and_right_under_clean_names():
    assert region_groups(["Left-Putamen", "Right-Putamen", "ctx-lh-insula", "ctx-rh-insula",
                          "Brain-Stem", "NAcc_L", "NAcc_R"]) == {
        "Putamen": ["Left-Putamen", "Right-Putamen"],
        "insula": ["ctx-lh-insula", "ctx-rh-insula"], "Brain-Stem": ["Brain-Stem"],
        "NAcc": ["NAcc_L", "NAcc_R"]}


def test_survey_and_config_use_the_sessions_column_segmentation_and_baseline(tmp_path):
    _dataset(tmp_path)
    sv = survey(tmp_path)
    assert sv.tracers == {"FLB457": "[11C]FLB457"}
    assert sv.condition_source == "sessions.tsv:condition"
    assert (sv.conditions, sv.baseline, sv.baseline_guessed) == (["placebo", "drug"],
                                                                 "placebo", False)
    assert sv.segmentation == "derivatives/fs"
    text = config_text(sv)
    cfg = parse_config(tomllib.loads(text))
    assert cfg.data.condition == "sessions.tsv:condition"
    assert cfg.regions["Cerebellum-Cortex"] == ("Left-Cerebellum-Cortex",
                                                "Right-Cerebellum-Cortex")
    t = cfg.tracers["FLB457"]
    assert t.reference_region == "Cerebellum-Cortex"
    assert t.exclude_regions == ("Cerebral-White-Matter",)
    assert [c.expr for c in cfg.contrasts] == ["drug - placebo"]
    assert cfg.statistics.baseline_condition == "placebo"
    assert "# " in text


def test_without_sessions_tsv_the_ses_labels_are_conditions_and_a_guess_is_flagged(tmp_path):
    _dataset(tmp_path, sessions_tsv=False, labels=("pre", "post"))
    sv = survey(tmp_path)
    assert sv.condition_source == "" and sv.baseline == "pre" and not sv.baseline_guessed


def test_init_cli_writes_the_file_refuses_to_overwrite_or_write_into_the_dataset(
        tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    _dataset(bids)
    out = tmp_path / "study.toml"
    code, stdout, err = _cli(["init", str(bids), "--out", str(out)], capsys)
    assert code == 0, err
    assert "petbind run" in stdout and tomllib.loads(out.read_text())["tracers"]
    code, _, err = _cli(["init", str(bids), "--out", str(out)], capsys)
    assert code == 2 and "--force" in err
    code, _, err = _cli(["init", str(bids), "--out", str(bids / "study.toml")], capsys)
    assert code == 2 and "input dataset" in err and not (bids / "study.toml").exists()


def test_run_without_config_says_to_run_init(tmp_path, capsys):
    _dataset(tmp_path)
    code, _, err = _cli(["run", str(tmp_path)], capsys)
    assert code == 2 and "petbind init" in err and "Traceback" not in err


def test_a_static_reconstruction_beside_the_dynamic_one_is_deselected(tmp_path):
    import shutil

    from petbind.study.discover import discover_scans

    _dataset(tmp_path)
    for pet in list(tmp_path.glob("sub-*/ses-*/pet/*_rec-acdyn_pet.nii.gz")):
        shutil.copy(pet, pet.with_name(pet.name.replace("acdyn", "acstat")))
    sv = survey(tmp_path)
    assert sv.select == {"rec": "acdyn"} and sv.n_scans == 4
    cfg = parse_config(tomllib.loads(config_text(sv)))
    assert cfg.data.select == {"rec": "acdyn"}
    for pet in tmp_path.glob("sub-*/ses-*/pet/*_pet.nii.gz"):  # atlases for discovery
        d = tmp_path / "derivatives" / "atlas" / pet.parent.relative_to(tmp_path)
        d.mkdir(parents=True, exist_ok=True)
        (d / pet.name.replace("_pet.", "_dseg.")).write_bytes(b"")
    plain = parse_config(tomllib.loads(config_text(sv).replace(
        'segmentation = "derivatives/fs"', 'atlas = "derivatives/atlas"')))
    scans, _ = discover_scans(tmp_path, plain)
    assert len(scans) == 4 and all("rec-acdyn" in s.stem for s in scans)
