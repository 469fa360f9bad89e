"""A report built from a real pipeline run on a dataset not named the simulator's way.

The simulator writes ``sub-XX/ses-<condition>/pet/sub-XX_ses-<condition>_trc-DASB_pet``;
a lab's dataset may have no session at all, the condition in another entity
(``acq-``) and more entities (``rec-``). The report must find every scan of
such a run (issue 15: a ``rec-`` entity once emptied it silently), show every
section, and show the same BP_ND as the same data in the simulator's layout.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from .conftest import STUDY_TOML
from .report_check import SECTIONS, assert_complete_report

REC = "rec-acdyn"


def _relabel(sim, dest):
    """``sub-XX/pet/sub-XX_acq-<condition>_trc-DASB_rec-acdyn_pet`` and its PET-space atlas."""
    dest.mkdir(parents=True)
    for name in ("dataset_description.json", "participants.tsv"):
        shutil.copy(sim / name, dest / name)
    stems = []
    for pet in sorted(sim.glob("sub-*/ses-*/pet/*_pet.nii.gz")):
        sub, ses = pet.parts[-4], pet.parts[-3]
        cond = ses.removeprefix("ses-")
        stem = f"{sub}_acq-{cond}_trc-DASB_{REC}"
        folder = dest / sub / "pet"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(pet, folder / f"{stem}_pet.nii.gz")
        shutil.copy(pet.with_name(pet.name.replace(".nii.gz", ".json")),
                    folder / f"{stem}_pet.json")
        old = pet.name.removesuffix("_pet.nii.gz")
        atlas = sim / "derivatives" / "petbind-sim" / sub / ses / "pet"
        to = dest / "derivatives" / "atlas" / sub / "pet"
        to.mkdir(parents=True, exist_ok=True)
        for ext in ("nii.gz", "tsv"):
            shutil.copy(atlas / f"{old}_dseg.{ext}", to / f"{stem}_dseg.{ext}")
        stems.append(stem)
    for anat in sim.glob("sub-*/anat/*_T1w.*"):
        (dest / anat.parts[-3] / "anat").mkdir(exist_ok=True)
        shutil.copy(anat, dest / anat.parts[-3] / "anat" / anat.name)
    return stems


@pytest.mark.slow
def test_report_of_a_run_on_acq_and_rec_entities_without_sessions_is_complete(
        noise_free_study, tmp_path):
    from petbind.study.config import load_config
    from petbind.study.pipeline import run_study

    bids = tmp_path / "lab"
    stems = _relabel(noise_free_study["bids"], bids)
    assert stems and not list(bids.glob("sub-*/ses-*"))
    toml = STUDY_TOML.replace('atlas = "derivatives/petbind-sim"',
                              'atlas = "derivatives/atlas"\ncondition_entity = "acq"')
    assert 'condition_entity = "acq"' in toml
    cfg = tmp_path / "study.toml"
    cfg.write_text(toml)
    out = tmp_path / "out"
    run_study(bids, load_config(cfg), out_dir=out, progress=False)

    html = assert_complete_report(out)  # every section, every scan's parts
    ids = re.findall(r'<section id="([a-z]+)"', html)
    assert [i for i in ids if i in SECTIONS] == SECTIONS
    for stem in stems:  # each scan by its full stem, entities kept
        assert f'id="scan-{stem}"' in html and REC in stem
    listed = json.loads((out / "group" / "provenance.json").read_text())["scans"]
    assert sorted(e["stem"] for e in listed) == sorted(stems)
    assert {e["condition"] for e in listed} == {"baseline", "ketamine"}

    # the same numbers as the same images in the simulator's layout
    keys = ["subject", "condition", "tracer", "region", "model"]
    lab = pd.read_csv(out / "group" / "outcomes.tsv", sep="\t", dtype={"subject": str})
    sim = pd.read_csv(noise_free_study["out"] / "group" / "outcomes.tsv", sep="\t",
                      dtype={"subject": str})
    both = sim.merge(lab, on=keys, suffixes=("_sim", "_lab"))
    assert len(both) == len(sim) == len(lab) > 0
    np.testing.assert_allclose(both["bp_nd_lab"], both["bp_nd_sim"], rtol=1e-9, atol=1e-12)
    # and the report shows them: every primary-model BP_ND of the first scan's fit table
    first = lab[(lab["subject"] == lab["subject"].min()) & (lab["model"] == "srtm")]
    shown = first[first["condition"] == "baseline"]
    for v in shown["bp_nd"]:
        assert f"<td>{v:.3f}</td>" in html
