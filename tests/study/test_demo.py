"""`petbind demo`'s study part: regions, realistic configs, the comparison of the two analyses.

The whole demo on a small study (simulate, run, table beside the truth, report) is
tested with the command that builds the report: tests/commands/test_demo.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from petbind.study.config import demo_config
from petbind.study.demo import DEMO_REGIONS

from .conftest import STUDY_TOML


def test_demo_regions_are_configured_targets_of_both_tracers():
    cfg = demo_config()
    for t in cfg.tracers.values():
        assert set(DEMO_REGIONS) <= set(t.target_regions)


# ---------------------------------------------------------------- petbind demo --realistic
def test_realistic_configs_put_subjects_in_native_position_with_motion_and_preprocess():
    from petbind.study.demo import realistic_configs

    sim, study = realistic_configs()
    assert sim.native_position and sim.motion
    assert study.preprocess.enabled and study.preprocess.motion and study.preprocess.nonlinear
    assert study.preprocess.template.endswith("tpl-petbindphantom_T1w.nii.gz")
    # everything else is the default demo's
    default = demo_config().to_dict()
    realistic = study.to_dict()
    assert {k: v for k, v in realistic.items() if k != "preprocess"} == {
        k: v for k, v in default.items() if k != "preprocess"}


def test_compare_changes_pairs_rows_by_tracer_contrast_and_region():
    from petbind.study.demo import compare_changes

    def row(tracer, region, pct, truth=-10.0, contrast="ketamine - baseline"):
        return {"tracer": tracer, "contrast": contrast, "region": region, "pct_change": pct,
                "pct_change_true": truth}

    default = [row("DASB", "VP", -8.0), row("DASB", "NAcc", -12.5), row("DASB", "caudate", 1.0)]
    realistic = [row("DASB", "NAcc", -11.0), row("DASB", "VP", -9.5),
                 row("DASB", "caudate", 3.0), row("AZ10419369", "VP", 5.0)]
    rows = compare_changes(default, realistic, regions=("NAcc", "VP"))
    assert [(r["region"], r["difference"]) for r in rows] == [("NAcc", 1.5), ("VP", -1.5)]
    assert rows[0]["pct_default"] == -12.5 and rows[0]["pct_realistic"] == -11.0
    assert len(compare_changes(default, realistic, regions=None)) == 3
    from petbind.study.demo import comparison_tables

    both = compare_changes(default + [row("DASB", "VP", 2.0, contrast="x - baseline")],
                           realistic + [row("DASB", "VP", 1.0, contrast="x - baseline")])
    tables = comparison_tables(both)
    assert [t.row_count for t in tables] == [2, 1]


@pytest.mark.slow
def test_realistic_chain_recovers_nacc_and_vp_bpnd_of_the_true_atlas(tmp_path):
    """2 subjects x 2 conditions x DASB, native positions + head motion + T1w, no noise.

    The reference is the primary model's fit of the simulator's noise-free,
    motion-free region curves over the true PET-space atlas (bp_nd_true_image):
    what an analysis of perfectly aligned data gives. Without noise the gap is
    what preprocessing (realignment, registration, template atlas) changes.
    Kept short: 21 frames, SRTM only, no maps, affine-only registration (the
    subjects' offsets are rigid).
    """
    import dataclasses
    import tomllib

    from petbind.simulate.config import default_config_text
    from petbind.simulate.study import simulate_study
    from petbind.study.demo import realistic_configs
    from petbind.study.pipeline import run_study

    sim_raw = tomllib.loads(default_config_text())
    sim_raw.update(subjects=2, tracers=["DASB"], conditions=["baseline", "ketamine"])
    sim_raw["scanner"]["noise"] = 0.0
    sim_raw["frames"]["schedule_s"] = [[4, 30], [4, 60], [4, 120], [4, 300], [5, 600]]
    study_raw = tomllib.loads(STUDY_TOML)
    study_raw["dataset"]["atlas"] = "auto"
    study_raw["tracers"]["DASB"].update(
        target_regions=["NAcc", "VP", "caudate", "putamen", "thalamus", "midbrain"],
        models=["srtm"], map_model="")
    study_raw["statistics"] = {"voxel": {"enabled": False}}
    sim, study = realistic_configs(sim_raw, study_raw)
    assert study.preprocess.enabled and sim.native_position and sim.motion
    study = dataclasses.replace(
        study, preprocess=dataclasses.replace(study.preprocess, nonlinear=False))
    bids = tmp_path / "bids"
    simulate_study(sim, bids)
    res = run_study(bids, study, progress=False)
    o = res.outcomes.set_index(["subject", "condition", "region"])
    assert o["valid"].all() and (o["model"] == "srtm").all()
    rel = o["bp_nd"] / o["bp_nd_true_image"] - 1.0
    small = rel[rel.index.get_level_values("region").isin(["NAcc", "VP"])]
    assert len(small) == 8
    # on average within a few %; single scans of these 10-20 voxel regions differ more
    # (docs/preprocessing.md, "In the study pipeline")
    assert abs(small.mean()) < 0.05, small
    assert np.abs(small).max() < 0.10, small
    big = rel[~rel.index.get_level_values("region").isin(["NAcc", "VP"])]
    assert abs(big.mean()) < 0.03, big
    assert np.abs(big).max() < 0.07, big
    # every frame and every registration was checked: the QC files of each scan exist
    for scan in bids.glob("sub-*/ses-*/pet/*_pet.nii.gz"):
        stem = scan.name.removesuffix("_pet.nii.gz")
        qc = res.out_dir / "preprocess" / scan.parent.relative_to(bids)
        for name in ("desc-motion_qc.png", "desc-pet2t1w_qc.png", "desc-t1w2template_qc.png",
                     "desc-motion_timeseries.tsv"):
            assert (qc / f"{stem}_{name}").is_file()
