"""Scan discovery: BIDS entities, atlases, and design problems named before any fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from petbind.errors import ConfigError, DataError, MetadataError
from petbind.study.config import parse_config
from petbind.study.discover import discover_scans, parse_entities


def _config(**stats) -> object:
    return parse_config({
        "tracers": {"DASB": {"reference_region": "cerebellum"}},
        "contrasts": ["ketamine - baseline"],
        "statistics": stats,
    }, source="study.toml")


def _scan(root: Path, sub: str, ses: str, trc: str = "DASB", run: str | None = None,
          atlas: bool = True) -> Path:
    stem = f"sub-{sub}_ses-{ses}_trc-{trc}" + (f"_run-{run}" if run else "")
    pet = root / f"sub-{sub}" / f"ses-{ses}" / "pet" / f"{stem}_pet.nii.gz"
    pet.parent.mkdir(parents=True, exist_ok=True)
    pet.write_bytes(b"")
    if atlas:
        d = root / "derivatives" / "atlas" / f"sub-{sub}" / f"ses-{ses}" / "pet"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}_dseg.nii.gz").write_bytes(b"")
        (d / f"{stem}_dseg.tsv").write_text("index\tname\tregion\n")
    return pet


def _study(root: Path, subjects=("01", "02"), sessions=("baseline", "ketamine")) -> None:
    for s in subjects:
        for c in sessions:
            _scan(root, s, c)


def test_parse_entities_reads_labels_and_suffix():
    ents, suffix = parse_entities("sub-01_ses-ketamine_trc-AZ10419369_run-2_pet.nii.gz")
    assert ents == {"sub": "01", "ses": "ketamine", "trc": "AZ10419369", "run": "2"}
    assert suffix == "pet"


def test_discovers_every_scan_with_its_atlas(tmp_path):
    _study(tmp_path)
    scans, warnings = discover_scans(tmp_path, _config())
    assert [(s.subject, s.condition) for s in scans] == [
        ("01", "baseline"), ("01", "ketamine"), ("02", "baseline"), ("02", "ketamine")]
    s = scans[0]
    assert s.stem == "sub-01_ses-baseline_trc-DASB"
    assert s.rel_dir == "sub-01/ses-baseline/pet"
    assert s.dseg.name == "sub-01_ses-baseline_trc-DASB_dseg.nii.gz"
    assert s.dseg_tsv.name == "sub-01_ses-baseline_trc-DASB_dseg.tsv"
    assert warnings == []


def test_contrast_naming_an_unknown_condition_is_a_config_error(tmp_path):
    _study(tmp_path)
    cfg = parse_config({"tracers": {"DASB": {"reference_region": "cerebellum"}},
                        "contrasts": ["placebo - baseline"]}, source="study.toml")
    with pytest.raises(ConfigError) as e:
        discover_scans(tmp_path, cfg)
    assert e.value.field == "contrasts[0]" and "placebo" in str(e.value)


def test_subject_missing_a_condition_is_a_named_warning(tmp_path):
    _study(tmp_path)
    _scan(tmp_path, "03", "baseline")
    scans, warnings = discover_scans(tmp_path, _config())
    assert len(scans) == 5
    assert any("sub-03" in w and "ketamine" in w for w in warnings)


def test_two_runs_where_one_is_expected_is_an_error_naming_the_files(tmp_path):
    _study(tmp_path)
    _scan(tmp_path, "01", "baseline", run="1")
    _scan(tmp_path, "01", "baseline", run="2")
    with pytest.raises(DataError) as e:
        discover_scans(tmp_path, _config())
    assert e.value.field == "run" and "run-2" in str(e.value)


def test_runs_first_keeps_the_lowest_run_and_says_so(tmp_path):
    _study(tmp_path, subjects=("02",))
    _scan(tmp_path, "01", "ketamine")
    _scan(tmp_path, "01", "baseline", run="2")
    _scan(tmp_path, "01", "baseline", run="1")
    scans, warnings = discover_scans(tmp_path, _config(runs="first"))
    chosen = [s for s in scans if s.subject == "01" and s.condition == "baseline"]
    assert [s.run for s in chosen] == ["1"]
    assert any("first" in w for w in warnings)


def test_runs_mean_keeps_every_run(tmp_path):
    _study(tmp_path)
    _scan(tmp_path, "03", "baseline", run="1")
    _scan(tmp_path, "03", "baseline", run="2")
    _scan(tmp_path, "03", "ketamine")
    scans, warnings = discover_scans(tmp_path, _config(runs="mean"))
    assert len([s for s in scans if s.subject == "03"]) == 3
    assert any("averaged" in w for w in warnings)


def test_scan_without_atlas_is_an_error_naming_the_expected_file(tmp_path):
    _study(tmp_path)
    _scan(tmp_path, "03", "baseline", atlas=False)
    with pytest.raises(DataError) as e:
        discover_scans(tmp_path, _config())
    assert e.value.field == "dataset.atlas"
    assert "sub-03_ses-baseline_trc-DASB_dseg.nii.gz" in str(e.value)


def test_unconfigured_tracer_is_skipped_with_a_warning(tmp_path):
    _study(tmp_path)
    _scan(tmp_path, "01", "baseline", trc="FDG")
    scans, warnings = discover_scans(tmp_path, _config())
    assert {s.tracer for s in scans} == {"DASB"}
    assert any("trc-FDG" in w for w in warnings)


def test_file_without_condition_entity_is_a_metadata_error(tmp_path):
    _study(tmp_path)
    pet = tmp_path / "sub-04" / "pet" / "sub-04_trc-DASB_pet.nii.gz"
    pet.parent.mkdir(parents=True)
    pet.write_bytes(b"")
    with pytest.raises(MetadataError) as e:
        discover_scans(tmp_path, _config())
    assert e.value.field == "ses"


def test_outputs_in_derivatives_petbind_are_never_taken_for_atlases(tmp_path):
    _study(tmp_path, subjects=("01",))
    own = tmp_path / "derivatives" / "petbind" / "sub-01" / "ses-baseline" / "pet"
    own.mkdir(parents=True)
    (own / "sub-01_ses-baseline_trc-DASB_dseg.nii.gz").write_bytes(b"")
    scans, _ = discover_scans(tmp_path, _config())
    assert all("petbind" not in s.dseg.parts for s in scans)


def test_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no PET scans"):
        discover_scans(tmp_path, _config())


def _lab_scan(root: Path, name: str, folder: str) -> Path:
    pet = root / folder / "pet" / f"{name}_pet.nii.gz"
    pet.parent.mkdir(parents=True, exist_ok=True)
    pet.write_bytes(b"")
    d = root / "derivatives" / "atlas" / folder / "pet"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}_dseg.nii.gz").write_bytes(b"")
    return pet


def test_conditions_come_from_a_sessions_tsv_column_and_stems_keep_every_entity(tmp_path):
    for sub in ("01", "02"):
        for ses in ("01", "02"):
            _lab_scan(tmp_path, f"sub-{sub}_ses-{ses}_trc-DASB_rec-acdyn", f"sub-{sub}/ses-{ses}")
        (tmp_path / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text(
            "session_id\tcondition\tacq_time\nses-01\tbaseline\tx\nses-02\tketamine\ty\n")
    cfg = parse_config({"dataset": {"condition": "sessions.tsv:condition"},
                        "tracers": {"DASB": {"reference_region": "cerebellum"}},
                        "contrasts": ["ketamine - baseline"]}, source="study.toml")
    scans, warnings = discover_scans(tmp_path, cfg)
    assert [(s.subject, s.condition, s.stem) for s in scans][:2] == [
        ("01", "baseline", "sub-01_ses-01_trc-DASB_rec-acdyn"),
        ("01", "ketamine", "sub-01_ses-02_trc-DASB_rec-acdyn")]
    assert warnings == []
    # a session the table does not list is an error naming the table and the row
    (tmp_path / "sub-02" / "sub-02_sessions.tsv").write_text(
        "session_id\tcondition\nses-01\tbaseline\n")
    with pytest.raises(DataError) as e:
        discover_scans(tmp_path, cfg)
    assert "sub-02_sessions.tsv" in str(e.value.path) and "ses-02" in e.value.fix


def test_conditions_from_participants_tsv_need_no_session_entity(tmp_path):
    for sub in ("01", "02", "03", "04"):
        _lab_scan(tmp_path, f"sub-{sub}_acq-hi_task-rest_trc-DASB", f"sub-{sub}")
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tgroup\nsub-01\tcontrol\nsub-02\tpatient\nsub-03\tcontrol\n"
        "sub-04\tpatient\n")
    cfg = parse_config({"dataset": {"condition": "participants.tsv:group"},
                        "tracers": {"DASB": {"reference_region": "cerebellum"}},
                        "contrasts": ["patient - control"],
                        "statistics": {"baseline_condition": "control"}}, source="study.toml")
    scans, _ = discover_scans(tmp_path, cfg)
    assert [(s.subject, s.condition) for s in scans] == [
        ("01", "control"), ("02", "patient"), ("03", "control"), ("04", "patient")]
    assert scans[0].rel_dir == "sub-01/pet"
    with pytest.raises(ConfigError):
        parse_config({"dataset": {"condition": "groups.tsv"},
                      "tracers": {"DASB": {"reference_region": "cerebellum"}},
                      "contrasts": ["patient - control"]})
