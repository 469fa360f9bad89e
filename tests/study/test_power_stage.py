"""``[power]`` in ``petbind run``: prospective power of the finished study's own design."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pandas as pd
import pytest

POWER = """
[power]
enabled = true
n = "2..3"
n_studies = 2
models = "primary"
simulate_config = "design.toml"
effects = ["DASB:ketamine:NAcc=-15"]
regions = ["NAcc", "putamen"]
"""


def design_toml(tmp_path):
    """One tracer (DASB), two conditions: a tiny design file for the simulator."""
    from petbind.simulate.config import default_config_text

    text = default_config_text()
    raw = tomllib.loads(text)
    assert "tracers" in raw and "conditions" in raw
    text = text.replace('tracers = ["AZ10419369", "DASB"]', 'tracers = ["DASB"]')
    path = tmp_path / "design.toml"
    path.write_text(text, encoding="utf-8")
    return path


def outcomes(bp_nacc: float, cv: float, n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for s in range(n):
        f = 1 + cv * rng.standard_normal()
        for region, bp in (("NAcc", bp_nacc), ("putamen", 2.0)):
            rows.append({"subject": f"{s + 1:02d}", "condition": "baseline", "tracer": "DASB",
                         "run": None, "region": region, "model": "srtm", "bp_nd": bp * f,
                         "valid": True})
    return pd.DataFrame(rows)


def test_power_stage_takes_the_study_estimates_and_writes_group_power(tmp_path):
    from petbind.study.config import load_config
    from petbind.study.power_stage import write_power_stage

    from .conftest import STUDY_TOML

    design_toml(tmp_path)
    cfg_path = tmp_path / "study.toml"
    cfg_path.write_text(STUDY_TOML + POWER, encoding="utf-8")
    cfg = load_config(cfg_path)
    assert cfg.power.enabled and cfg.power.simulate_config == tmp_path / "design.toml"
    out = tmp_path / "out"
    df = outcomes(bp_nacc=1.7, cv=0.15)
    paths = write_power_stage(cfg, out, df, scheduler="sync")
    assert {p.name for p in paths} == {"power.tsv", "power_n80.tsv", "power.json",
                                      "power.png"}
    assert all(p.parent == out / "group" / "power" for p in paths)
    t = pd.read_csv(out / "group" / "power" / "power.tsv", sep="\t")
    assert set(t["n"]) == {2, 3} and set(t["model"]) == {"srtm"}
    assert set(t["region"]) == {"NAcc", "putamen"}  # power.regions
    nacc = t[t["region"] == "NAcc"].iloc[0]
    assert nacc["pct_change_design"] == pytest.approx(-15.0)  # power.effects
    info = json.loads((out / "group" / "power" / "power.json").read_text())
    assert info["n_studies"] == 2 and info["scheduler"] == "sync"
    assert any("baseline BP_ND" in n for n in info["notes"])
    assert any("DASB:ketamine:NAcc=-15" in n for n in info["notes"])


def test_power_stage_uses_the_studys_baseline_bp_nd():
    """The simulated truth's baseline NAcc BP_ND is the study's mean, not the design's."""
    from petbind.simulate.config import load_config as load_sim
    from petbind.stats.power_design import power_design
    from petbind.study.config import demo_config

    sim = load_sim(None)
    df = outcomes(bp_nacc=0.9, cv=0.1)
    new, study, notes = power_design(sim, demo_config(), outcomes=df)
    assert any("baseline BP_ND" in n for n in notes)
    dasb = next(t for t in new.tracers if t.name == "DASB")
    want = df[df.region == "NAcc"].bp_nd.mean()
    assert dasb.regions["NAcc"].bp_nd == pytest.approx(want)
    assert study.contrasts == demo_config().contrasts


@pytest.mark.slow
def test_run_with_power_section_writes_group_power_and_the_report_shows_it(
        noise_free_study, tmp_path):
    from petbind.report import build_report
    from petbind.study.config import load_config
    from petbind.study.pipeline import run_study

    design_toml(tmp_path)
    cfg_path = tmp_path / "study.toml"
    cfg_path.write_text(noise_free_study["config"].read_text() + POWER, encoding="utf-8")
    res = run_study(noise_free_study["bids"], load_config(cfg_path), out_dir=tmp_path / "o",
                    progress=False)
    folder = res.out_dir / "group" / "power"
    assert (folder / "power.tsv").is_file() and (folder / "power.png").is_file()
    info = json.loads((folder / "power.json").read_text())
    assert any("baseline BP_ND" in n for n in info["notes"])
    html = build_report(res.out_dir).read_text(encoding="utf-8")
    assert "Prospective power from 2 simulated studies" in html


def test_a_design_power_cannot_simulate_is_a_warning_of_the_run_not_a_failure(tmp_path):
    """Target regions the simulator's phantom lacks: the run keeps its outputs."""
    from petbind.study.config import parse_config
    from petbind.study.power_stage import power_stage

    cfg = parse_config({"tracers": {"DASB": {"reference_region": "cerebellum",
                                             "target_regions": ["Left-Accumbens-area"]}},
                        "contrasts": ["ketamine - baseline"],
                        "power": {"enabled": True, "n": [2], "n_studies": 2}},
                       source="study.toml")
    said = []
    warnings = power_stage(cfg, tmp_path, outcomes(1.0, 0.1), scheduler="sync",
                           log=said.append)
    assert len(warnings) == 1 and "not computed" in warnings[0]
    assert "Left-Accumbens-area" in warnings[0] and "not simulated regions" in warnings[0]
    assert any(s.startswith("warning:") for s in said)
    assert not (tmp_path / "group" / "power").exists()
