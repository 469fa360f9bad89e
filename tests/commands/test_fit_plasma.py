"""``petbind fit --blood``: plasma-input models end to end on BIDS files.

Truth: a manual blood recording (whole blood, plasma = 1.25 x whole blood,
Hill parent fraction) from the Feng (1993) input, and 1TCM tissue curves on
the *parent* plasma computed by ``solve_ivp`` and frame-averaged by Simpson's
rule, written as a BIDS ``_tacs.tsv``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import simpson, solve_ivp

from petbind.io.blood import BloodRecording, write_blood
from petbind.timing import FrameTiming

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fit_cli import run_cli as _run

TIMING = FrameTiming.from_schedule([(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300),
                                    (5, 600)])
A1, A2, A3, L1, L2, L3 = 851.1225, 21.8798, 20.8113, 4.133859, 0.01043449, 0.1190996
PB = 1.25  # plasma / whole blood
VB = 0.04
TRUTH = {"putamen": (0.4, 0.1), "thalamus": (0.3, 0.12), "cerebellum": (0.25, 0.125)}


def total_plasma(t):
    t = np.asarray(t, dtype=float)
    return (A1 * t - A2 - A3) * np.exp(-L1 * t) + A2 * np.exp(-L2 * t) + A3 * np.exp(-L3 * t)


def parent(t):
    t = np.asarray(t, dtype=float)
    return 1 - 0.7 * t**2 / (15.0**2 + t**2)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pet")
    t = np.unique(np.concatenate([np.arange(0, 3, 1 / 60), np.arange(3, 90.01, 0.5)]))
    cols = {"whole_blood_radioactivity": total_plasma(t) / PB,
            "plasma_radioactivity": total_plasma(t),
            "metabolite_parent_fraction": parent(t)}
    blood = folder / "sub-01_recording-manual_blood.tsv"
    write_blood(blood, BloodRecording("manual", t, cols, {"DispersionCorrected": True}))
    tac = {"frame_start": TIMING.start_s, "frame_end": TIMING.end * 60.0}
    for name, (k1, k2) in TRUTH.items():
        sol = solve_ivp(lambda s, y, k1=k1, k2=k2: k1 * total_plasma(s) * parent(s) - k2 * y,
                        (0, 90), [0.0], rtol=1e-9, atol=1e-12, dense_output=True,
                        max_step=0.1)
        means = []
        for a, d in zip(TIMING.start, TIMING.duration, strict=True):
            ff = np.linspace(a, a + d, 801)
            val = (1 - VB) * sol.sol(ff)[0] + VB * total_plasma(ff) / PB
            means.append(simpson(val, x=ff) / d)
        tac[name] = means
    path = folder / "sub-01_tacs.tsv"
    pd.DataFrame(tac).to_csv(path, sep="\t", index=False)
    path.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL",
                                                      "TracerRadionuclide": "C-11"}))
    return path, blood


def test_1tcm_from_the_command_gives_vt_and_bp_nd_per_region(files, tmp_path):
    tacs, blood = files
    out = tmp_path / "fits.tsv"
    plots = tmp_path / "plots"
    assert _run(["fit", str(tacs), "--model", "1tcm", "--blood", str(blood), "--ref",
                 "cerebellum", "--out", str(out), "--plots", str(plots)]) == 0
    df = pd.read_csv(out, sep="\t").set_index("region")
    vt = {r: k1 / k2 for r, (k1, k2) in TRUTH.items()}
    for r in TRUTH:
        assert df.loc[r, "vt"] == pytest.approx(vt[r], rel=5e-3)
        assert df.loc[r, "bp_nd"] == pytest.approx(vt[r] / vt["cerebellum"] - 1, abs=5e-3)
    assert {"k1", "k2", "vb", "vt_se", "vnd", "bp_p", "aic", "valid"} <= set(df.columns)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Model"] == "1tcm" and side["Units"]["vt"] == "mL/cm3"
    assert side["Settings"]["blood"]["parent_fraction"] in ("hill", "exponential", "power")
    assert (plots / "input_function.png").stat().st_size > 0
    assert len(list(plots.glob("*_1tcm.png"))) == 3


@pytest.mark.parametrize("model", ["logan-plasma", "ma1"])
def test_graphical_models_from_the_command_give_vt(files, tmp_path, model):
    tacs, blood = files
    out = tmp_path / "fits.tsv"
    assert _run(["fit", str(tacs), "--model", model, "--blood", str(blood), "--tstar", "30",
                 "--vb", str(VB), "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t").set_index("region")
    for r, (k1, k2) in TRUTH.items():
        assert df.loc[r, "vt"] == pytest.approx(k1 / k2, rel=1e-2)


def test_patlak_from_the_command_has_ki_and_vt_columns(files, tmp_path):
    tacs, blood = files
    out = tmp_path / "fits.tsv"
    assert _run(["fit", str(tacs), "--model", "patlak", "--blood", str(blood),
                 "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t")
    assert {"ki", "vt", "tstar"} <= set(df.columns)


def test_plasma_model_errors_are_one_line_and_exit_2(files, tmp_path, capsys):
    tacs, blood = files
    assert _run(["fit", str(tacs), "--model", "2tcm"]) == 2
    assert "--blood" in capsys.readouterr().err
    assert _run(["fit", str(tacs), "--model", "1tcm", "--blood", str(blood),
                 "--tstar", "20"]) == 2
    assert "--tstar" in capsys.readouterr().err
    bad = tmp_path / "sub-02_recording-manual_blood.tsv"
    bad.write_text("time\tplasma_radioactivity\n0\t0\n60\t5\n30\t4\n")
    bad.with_suffix(".json").write_text(json.dumps({
        "time": {"Units": "s"}, "plasma_radioactivity": {"Units": "kBq/mL"}}))
    assert _run(["fit", str(tacs), "--model", "1tcm", "--blood", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sub-02_recording-manual_blood.tsv" in err and "time" in err
    assert "Traceback" not in err


def test_graphical_columns_stay_the_contract_without_fitted_delay_or_vb(files, tmp_path):
    tacs, blood = files
    out = tmp_path / "fits.tsv"
    assert _run(["fit", str(tacs), "--model", "logan-plasma", "--blood", str(blood),
                 "--tstar", "30", "--vb", str(VB), "--out", str(out)]) == 0
    assert list(pd.read_csv(out, sep="\t").columns) == [
        "region", "model", "vt", "intercept", "tstar", "vt_se", "intercept_se", "aic", "r2",
        "n_frames_used", "valid", "bound", "invalid_reason"]  # the last two: issue 17


def test_graphical_vb_fit_from_the_command_recovers_vb_and_vt(files, tmp_path):
    tacs, blood = files
    out = tmp_path / "fits.tsv"
    plots = tmp_path / "plots"
    assert _run(["fit", str(tacs), "--model", "logan-plasma", "--blood", str(blood),
                 "--tstar", "30", "--vb", "fit", "--delay", "fit", "--ref", "cerebellum",
                 "--out", str(out), "--plots", str(plots)]) == 0
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        ["input_function.png"] + [f"{r}_logan-plasma.png" for r in TRUTH])
    df = pd.read_csv(out, sep="\t").set_index("region")
    np.testing.assert_allclose(df["vb"], VB, atol=2e-3)
    assert np.all(np.abs(df["delay"]) <= 1 / 60 + 1e-9)
    vt = {r: k1 / k2 for r, (k1, k2) in TRUTH.items()}
    for r in TRUTH:
        assert df.loc[r, "vt"] == pytest.approx(vt[r], rel=5e-3)
        assert df.loc[r, "bp_nd"] == pytest.approx(vt[r] / vt["cerebellum"] - 1, abs=5e-3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Units"]["delay"] == "min" and side["Units"]["vb"] == "unitless"
    assert side["Settings"]["vb"] == "fit" and side["Settings"]["delay_min"] == "fit"
    assert side["Settings"]["prefit"]["end_min"] == 10.0


def test_graphical_delay_fit_from_the_command_finds_a_late_arterial_line(files, tmp_path):
    """The arterial line records the input 0.2 min late: fitted delay -0.2 min."""
    tacs, _ = files
    lag = 0.2
    t = np.unique(np.concatenate([np.arange(0, 3, 1 / 60), np.arange(3, 90.01, 0.5)]))
    early = np.clip(t - lag, 0, None)
    on = t >= lag
    cols = {"whole_blood_radioactivity": np.where(on, total_plasma(early) / PB, 0.0),
            "plasma_radioactivity": np.where(on, total_plasma(early), 0.0),
            "metabolite_parent_fraction": parent(early)}
    blood = tmp_path / "sub-01_recording-manual_blood.tsv"
    write_blood(blood, BloodRecording("manual", t, cols, {"DispersionCorrected": True}))
    vt = {r: k1 / k2 for r, (k1, k2) in TRUTH.items()}
    results = {}
    for delay in ("0", "fit"):
        out = tmp_path / f"ma1_{delay}.tsv"
        assert _run(["fit", str(tacs), "--model", "ma1", "--blood", str(blood), "--tstar",
                     "30", "--vb", str(VB), "--delay", delay, "--out", str(out)]) == 0
        results[delay] = pd.read_csv(out, sep="\t").set_index("region")
    fitted = results["fit"]
    assert np.all(np.abs(fitted["delay"] + lag) <= 1 / 60 + 1e-9)
    for r in TRUTH:
        assert fitted.loc[r, "vt"] == pytest.approx(vt[r], rel=5e-3)
    # the unshifted input misses V_T by more
    err = [abs(results["0"].loc[r, "vt"] / vt[r] - 1) for r in TRUTH]
    assert min(err) > max(abs(fitted.loc[r, "vt"] / vt[r] - 1) for r in TRUTH)
