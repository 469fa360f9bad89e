"""A lab's dataset end to end: `petbind init`, then `petbind run` on the config it wrote.

The lab layout (tests/study/lab_dataset.py) holds the simulator's scans as a
lab would: numbered sessions + sessions.tsv, a rec- entity, "[11C]DASB",
Bq/mL, one scan not decay corrected, one missing, a FreeSurfer aparc+aseg.mgz
per subject in T1w space on another grid, images as links into an annex
with decoy sidecars. Its BP_ND must equal the same study in the simulator's
layout, run with the config `init` writes for that one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.commands._fit_cli import cli_output as _cli

from .lab_dataset import MISSING, make_lab_dataset
from .report_check import assert_complete_report


def _outcomes(out):
    return pd.read_csv(out / "group" / "outcomes.tsv", sep="\t", dtype={"subject": str})


@pytest.mark.slow
def test_lab_dataset_from_init_to_a_complete_report_equal_to_the_simulator_layout(
        noise_free_study, tmp_path, capsys):
    sim = noise_free_study["bids"]
    lab = make_lab_dataset(sim, tmp_path / "lab")["bids"]
    cfg = tmp_path / "study.toml"
    code, out, err = _cli(["init", str(lab), "--out", str(cfg)], capsys)
    assert code == 0, err
    text = cfg.read_text()
    assert 'condition = "sessions.tsv:condition"' in text
    assert 'segmentation = "derivatives/freesurfer"' in text
    assert 'reference_region = "Cerebellum-Cortex"' in text and "[11C]DASB" in text
    assert 'expr = "ketamine - baseline"' in text

    code, out, err = _cli(["run", str(lab), "--config", str(cfg), "--out",
                           str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 0, err
    warning = f"sub-{MISSING[0]} has no {MISSING[1]} scan"
    assert (out + err).count(warning) == 1  # printed once
    assert "report.html" in out
    html = assert_complete_report(tmp_path / "out")
    assert "FreeSurfer segmentation in T1w space" in html and "images&#39; affines" in html
    # dose and tracer from the sidecars beside the links, never the decoys beside the targets
    assert "[11C]DASB" in html and "decoy" not in html
    lab_o = _outcomes(tmp_path / "out")
    assert set(lab_o["condition"]) == {"baseline", "ketamine"}
    assert len(lab_o.groupby(["subject", "condition"])) == 5

    # the same study in the simulator's layout, with the config init writes for it
    sim_cfg = tmp_path / "sim.toml"
    assert _cli(["init", str(sim), "--out", str(sim_cfg)], capsys)[0] == 0
    assert _cli(["run", str(sim), "--config", str(sim_cfg), "--out", str(tmp_path / "sim"),
                 "--no-progress", "--no-report"], capsys)[0] == 0
    sim_o = _outcomes(tmp_path / "sim")
    sim_o["region"] = sim_o["region"].replace({"cerebellum": "Cerebellum-Cortex"})
    keys = ["subject", "condition", "tracer", "region", "model"]
    both = sim_o.merge(lab_o, on=keys, suffixes=("_sim", "_lab"))
    assert len(both) == len(lab_o) > 0
    assert set(both["model"]) == {"srtm", "mrtm2", "logan"}
    np.testing.assert_allclose(both["bp_nd_lab"], both["bp_nd_sim"], rtol=1e-6, atol=1e-9)
