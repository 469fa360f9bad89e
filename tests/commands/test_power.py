"""``petbind power``: options checked, files written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from petbind.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_bad_n_is_an_error_for_people(tmp_path, capsys):
    code, out, err = run(["power", "--out", str(tmp_path / "p"), "--n", "1,4"], capsys)
    assert code == 2
    text = out + err
    assert "--n" in text or "power.n" in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_power_writes_table_json_and_figure(tmp_path, capsys):
    from petbind.simulate.config import default_config_text

    sim = tmp_path / "sim.toml"
    text = default_config_text().replace('tracers = ["AZ10419369", "DASB"]',
                                         'tracers = ["AZ10419369"]')
    sim.write_text(text, encoding="utf-8")
    out = tmp_path / "power"
    code, stdout, _ = run(["power", "--out", str(out), "--simulate-config", str(sim),
                           "--n", "2..3", "--studies", "2", "--workers", "1",
                           "--models", "primary"], capsys)
    assert code in (0, None), stdout
    t = pd.read_csv(out / "power.tsv", sep="\t")
    assert set(t["n"]) == {2, 3} and set(t["tracer"]) == {"AZ10419369"}
    assert set(t["model"]) == {"srtm"}
    info = json.loads((out / "power.json").read_text())
    assert info["n_studies"] == 2 and info["level"] == "region"
    assert (out / "power.png").stat().st_size > 1000


def test_config_power_section_is_the_default_and_writes_into_the_finished_study(
        tmp_path, capsys):
    """`petbind power --config study.toml`: [power] keys, the study's estimates, OUT/group/power."""
    import numpy as np

    from petbind.simulate.config import default_config_text

    (tmp_path / "design.toml").write_text(default_config_text().replace(
        'tracers = ["AZ10419369", "DASB"]', 'tracers = ["DASB"]'), encoding="utf-8")
    out = tmp_path / "bids" / "derivatives" / "petbind"
    (out / "group").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [{"subject": f"{s:02d}", "condition": "baseline", "tracer": "DASB", "run": "n/a",
             "region": r, "model": "srtm", "bp_nd": bp * (1 + 0.1 * rng.standard_normal()),
             "valid": True} for s in range(1, 7) for r, bp in (("NAcc", 1.1), ("VP", 0.9))]
    pd.DataFrame(rows).to_csv(out / "group" / "outcomes.tsv", sep="\t", index=False)
    (tmp_path / "study.toml").write_text("""
[dataset]
path = "bids"
[tracers.DASB]
reference_region = "cerebellum"
target_regions = ["NAcc", "VP", "putamen"]
models = ["srtm", "logan"]
k2prime = "mrtm"
k2prime_region = "putamen"
[[contrasts]]
expr = "ketamine - baseline"
[power]
n = [2, 3]
n_studies = 2
models = "primary"
simulate_config = "design.toml"
regions = ["NAcc"]
""", encoding="utf-8")
    code, stdout, err = run(["power", "--config", str(tmp_path / "study.toml"),
                             "--workers", "1", "--effect", "DASB:ketamine:NAcc=25"], capsys)
    assert code in (0, None), stdout + err
    folder = out / "group" / "power"
    t = pd.read_csv(folder / "power.tsv", sep="\t")
    assert set(t["n"]) == {2, 3} and set(t["region"]) == {"NAcc"} and set(t["model"]) == {
        "srtm"}
    assert t["pct_change_design"].iloc[0] == pytest.approx(25.0)  # the option wins
    info = json.loads((folder / "power.json").read_text())
    assert info["from_study"] == str(out) and info["scheduler"] == "sync"
    assert any("DASB: baseline BP_ND of 2 regions from 6 subjects" in n for n in info["notes"])


def test_unknown_contrast_option_is_an_error_for_people(tmp_path, capsys):
    code, out, err = run(["power", "--out", str(tmp_path / "p"), "--contrasts", "nope"],
                         capsys)
    assert code == 2
    text = out + err
    assert "--contrasts" in text and "not a contrast" in text and "Traceback" not in text
