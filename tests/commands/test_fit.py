"""``petbind fit`` on BIDS TAC tables made from an independent truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from petbind.timing import FrameTiming

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fit_cli import run_cli as _run
from _kinetic_truth import DEMO_SCHEDULE, srtm_truth

TIMING = FrameTiming.from_schedule(DEMO_SCHEDULE)
TRUTH = {"putamen": (2.0, 1.1), "thalamus": (1.0, 0.9), "cortex": (0.4, 1.2)}


@pytest.fixture(scope="module")
def tacs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    cols = {"frame_start": TIMING.start_s, "frame_end": TIMING.start_s + TIMING.duration_s}
    for name, (bp, r1) in TRUTH.items():
        ref, cols[name] = srtm_truth(TIMING.start, TIMING.end, bp, r1)
    cols["cerebellum"] = ref
    path = folder / "sub-01_tacs.tsv"
    pd.DataFrame(cols).to_csv(path, sep="\t", index=False)
    path.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL",
                                                      "TracerRadionuclide": "C-11"}))
    return path


@pytest.mark.parametrize("model", ["srtm", "bfsrtm", "mrtm"])
def test_fit_writes_one_row_per_target_region_with_truth(tacs, tmp_path, model):
    out = tmp_path / "res.tsv"
    assert _run(["fit", str(tacs), "--model", model, "--ref", "cerebellum",
                 "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns[:3]) == ["region", "model", "bp_nd"]
    assert {"r1", "k2", "bp_nd_se", "aic", "r2", "valid", "reference"} <= set(df.columns)
    assert (df["reference"] == "cerebellum").all()
    assert sorted(df["region"]) == sorted(TRUTH)
    for _, row in df.iterrows():
        assert row["bp_nd"] == pytest.approx(TRUTH[row["region"]][0], rel=1e-3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Model"] == model and side["ReferenceRegion"] == "cerebellum"
    assert side["Settings"]["weights"] == "uniform"


def test_fit_auto_k2prime_counts_weights_window_and_plots(tacs, tmp_path):
    out = tmp_path / "r.tsv"
    plots = tmp_path / "plots"
    assert _run(["fit", str(tacs), "--model", "mrtm2", "--ref", "cerebellum", "--k2prime",
                 "auto", "--weights", "counts", "--start", "0", "--end", "90",
                 "--out", str(out), "--plots", str(plots)]) == 0
    df = pd.read_csv(out, sep="\t")
    np.testing.assert_allclose(df["k2prime"], 0.15, rtol=2e-3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Settings"]["isotope"] == "C-11"
    assert side["K2primeEstimate"]["method"] == "mrtm"
    assert sorted(p.name for p in plots.iterdir()) == sorted(f"{r}_mrtm2.png" for r in TRUTH)


def test_fit_srtm2_takes_auto_k2prime_from_srtm(tacs, tmp_path):
    out = tmp_path / "s2.tsv"
    assert _run(["fit", str(tacs), "--model", "srtm2", "--ref", "cerebellum", "--k2prime",
                 "auto", "--out", str(out)]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["K2primeEstimate"]["method"] == "srtm"
    df = pd.read_csv(out, sep="\t")
    for _, row in df.iterrows():
        assert row["bp_nd"] == pytest.approx(TRUTH[row["region"]][0], rel=1e-3)


def test_fit_logan_with_tstar_prints_the_table(tacs, capsys):
    assert _run(["fit", str(tacs), "--model", "logan", "--ref", "cerebellum",
                 "--k2prime", "0.15", "--tstar", "30"]) == 0
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert lines[0].startswith("region\tmodel\tbp_nd\tdvr")
    assert len(lines) == 4


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "srtm", "--ref", "nowhere"], "reference region 'nowhere'"),
    (["--model", "srtm2", "--ref", "cerebellum"], "k2'"),
    (["--model", "srtm", "--ref", "cerebellum", "--tstar", "20"], "--tstar"),
    (["--model", "srtm", "--ref", "cerebellum", "--k2prime", "abc"], "--k2prime"),
    (["--model", "srtm", "--ref", "cerebellum", "--weights", "poisson"], "weighting"),
    (["--model", "srtm", "--ref", "cerebellum", "--blood", "b.tsv"], "--blood"),
    (["--model", "nope", "--ref", "cerebellum"], "unknown model"),
    (["--model", "srtm", "--ref", "cerebellum", "--start", "200"], "window"),
])
def test_bad_options_give_one_line_errors_and_exit_2(tacs, capsys, args, needle):
    assert _run(["fit", str(tacs), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_fit_refuses_to_overwrite_its_input(tacs, capsys):
    assert _run(["fit", str(tacs), "--model", "srtm", "--ref", "cerebellum",
                 "--out", str(tacs)]) == 2
    assert "overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# helpers shared by the reference and plasma branches of ``petbind fit``
# ---------------------------------------------------------------------------
def test_parse_number_or_takes_the_keyword_in_any_case_or_a_number():
    from petbind.commands.fit_common import parse_number_or

    kw = {"what": "minutes", "example": "e.g. --delay 0.1"}
    assert parse_number_or(" FIT ", "--delay", "fit", **kw) == "fit"
    assert parse_number_or("-0.25", "--delay", "fit", **kw) == -0.25
    assert parse_number_or("1e-1", "--delay", "fit", **kw) == 0.1


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "-inf", ""])
def test_parse_number_or_refuses_words_and_non_finite_numbers_naming_the_option(text):
    from petbind.commands.fit_common import parse_number_or
    from petbind.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_number_or(text, "--vb", "fit", what="a fraction", example="e.g. --vb 0.05")
    assert err.value.field == "--vb"
    assert "--vb must be a fraction or 'fit'" in str(err.value)
    assert "e.g. --vb 0.05" in str(err.value)


def test_select_regions_strips_blanks_and_names_the_missing_ones(tmp_path):
    from petbind.commands.fit_common import select_regions
    from petbind.errors import ConfigError

    names = ["putamen", "thalamus", "cerebellum"]
    assert select_regions(" thalamus, putamen ,", names, tmp_path / "t.tsv") == [
        "thalamus", "putamen"]
    with pytest.raises(ConfigError) as err:
        select_regions("putamen,nacc", names, tmp_path / "t.tsv")
    assert err.value.field == "--regions" and "'nacc'" in str(err.value)
    assert "t.tsv" in str(err.value)


def test_refuse_overwrite_sees_the_same_file_through_another_spelling(tmp_path):
    from petbind.commands.fit_common import refuse_overwrite
    from petbind.errors import ConfigError

    tacs = tmp_path / "a" / "t.tsv"
    tacs.parent.mkdir()
    tacs.write_text("x")
    refuse_overwrite({"--out": tmp_path / "a" / "res.tsv", "--plots": None}, [tacs])
    with pytest.raises(ConfigError) as err:
        refuse_overwrite({"--out": None, "--plots": tmp_path / "a" / ".." / "a" / "t.tsv"},
                         [tmp_path / "b.tsv", tacs])
    assert err.value.field == "--plots" and "overwrite" in str(err.value)


def test_emit_table_prints_or_writes_table_and_sidecar(tmp_path, capsys):
    from petbind.commands.fit_common import emit_table, warn_invalid

    df = pd.DataFrame({"region": ["a", "b"], "model": ["m", "m"], "vt": [1.5, np.nan],
                       "valid": [True, False]})
    emit_table(df, None, {"Model": "m"})
    assert capsys.readouterr().out == "region\tmodel\tvt\tvalid\na\tm\t1.5\tTrue\n" \
                                      "b\tm\tn/a\tFalse\n"
    out = tmp_path / "res.tsv"
    emit_table(df, out, {"Model": "m"})
    assert "wrote" in capsys.readouterr().out
    back = pd.read_csv(out, sep="\t", na_values="n/a")
    assert back["vt"].isna().tolist() == [False, True]
    assert json.loads(out.with_suffix(".json").read_text()) == {"Model": "m"}
    warn_invalid(df)
    assert capsys.readouterr().err.strip() == "warning: 1 region(s) gave no valid fit: b"
    warn_invalid(df[df["valid"]])
    assert capsys.readouterr().err == ""


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from petbind.commands.fit_common import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_fit_logan_runs_without_k2prime_and_records_the_policy(tacs, tmp_path):
    # issue 17: Logan reference without k2' (the usual [11C]PiB variant) is not refused
    out = tmp_path / "logan.tsv"
    plots = tmp_path / "plots"
    assert _run(["fit", str(tacs), "--model", "logan", "--ref", "cerebellum", "--tstar", "40",
                 "--out", str(out), "--plots", str(plots)]) == 0
    # the Logan plot is drawn from the coordinates its catalogue entry names
    assert sorted(p.name for p in plots.iterdir()) == sorted(f"{r}_logan.png" for r in TRUTH)
    df = pd.read_csv(out, sep="\t", keep_default_na=False, na_values=["n/a"])
    assert df["valid"].all() and (df["invalid_reason"] == "").all()
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Settings"]["k2prime"] is None and side["K2PrimePolicy"]["policy"] == "none"
    for _, row in df.iterrows():  # without the k2' term DVR is off by < 3 % at t* 40 here
        assert row["dvr"] == pytest.approx(TRUTH[row["region"]][0] + 1, rel=0.03)
    assert side["Units"]["dvr"] == "unitless" and "Logan J" in side["Citation"]


@pytest.mark.parametrize(("policy", "model", "regions"), [
    ("median", "mrtm", ["putamen", "thalamus", "cortex"]),
    ("mrtm@putamen", "mrtm", ["putamen"]),
    ("srtm@thalamus", "srtm", ["thalamus"])])
def test_fit_k2prime_policies_recover_k2prime_and_say_how(tacs, tmp_path, policy, model,
                                                          regions):
    out = tmp_path / "r.tsv"
    assert _run(["fit", str(tacs), "--model", "mrtm2", "--ref", "cerebellum", "--k2prime",
                 policy, "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t")
    np.testing.assert_allclose(df["k2prime"], 0.15, rtol=2e-3)
    side = json.loads(out.with_suffix(".json").read_text())
    rec = side["K2PrimePolicy"]
    assert rec["policy"] == policy and rec["model"] == model
    assert sorted(rec["regions"]) == sorted(regions)


def test_fit_k2prime_none_is_refused_for_mrtm2(tacs, capsys):
    assert _run(["fit", str(tacs), "--model", "mrtm2", "--ref", "cerebellum", "--k2prime",
                 "none"]) == 2
    assert "k2'" in capsys.readouterr().err


@pytest.mark.parametrize("volumes", [True, False])
def test_fit_pools_reference_columns_a_plus_b_volume_weighted(tmp_path, capsys, volumes):
    # the reference split into a left (30 voxels, 0.9x) and a right (10 voxels, 1.3x) half:
    # volume-weighted, 30 * 0.9 + 10 * 1.3 = 40 * 1.0, the original reference
    cols = {"frame_start": TIMING.start_s, "frame_end": TIMING.start_s + TIMING.duration_s}
    ref, cols["putamen"] = srtm_truth(TIMING.start, TIMING.end, 2.0, 1.1)
    cols["cb_L"], cols["cb_R"] = 0.9 * ref, 1.3 * ref
    path = tmp_path / "sub-01_tacs.tsv"
    pd.DataFrame(cols).to_csv(path, sep="\t", index=False)
    side = {"Units": "kBq/mL"}
    if volumes:
        side["n_voxels"] = {"cb_L": 30, "cb_R": 10, "putamen": 12}
    path.with_suffix(".json").write_text(json.dumps(side))
    out = tmp_path / "res.tsv"
    assert _run(["fit", str(path), "--model", "srtm", "--ref", "cb_L+cb_R",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    df = pd.read_csv(out, sep="\t")
    assert list(df["region"]) == ["putamen"] and (df["reference"] == "cb_L+cb_R").all()
    if volumes:
        assert df["bp_nd"].iloc[0] == pytest.approx(2.0, rel=1e-3)
        assert "equal weights" not in err
    else:  # equal weights: the reference is 1.1x too high, and the note says so
        assert "equal weights" in err
        assert df["bp_nd"].iloc[0] < 2.0 * 0.95
