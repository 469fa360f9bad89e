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
