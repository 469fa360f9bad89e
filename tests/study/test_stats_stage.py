"""The study stage of the design statistics writes what applies, and only that."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from petbind.stats.roi import Contrast
from petbind.study.config import StatisticsConfig
from petbind.study.stats_stage import write_design_statistics


def _outcomes(runs: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(6):
        for region, bp in (("NAcc", 1.2), ("VP", 1.8), ("thalamus", 0.6)):
            for cond, f in (("baseline", 1.0), ("block", 0.4)):
                for run in ((1, 2) if runs and cond == "baseline" else (np.nan,)):
                    rows.append({"subject": f"{s:02d}", "condition": cond, "tracer": "X",
                                 "run": run, "region": region, "model": "srtm",
                                 "bp_nd": bp * f * (1 + 0.03 * rng.standard_normal()),
                                 "valid": True})
    return pd.DataFrame(rows)


def _config(**stats):
    return SimpleNamespace(statistics=StatisticsConfig(**stats),
                           contrasts=(Contrast.parse("block - baseline"),),
                           tracers={"X": SimpleNamespace(primary_model="srtm")})


def test_nothing_extra_without_retests_blocking_or_covariates(tmp_path):
    out = _outcomes(runs=False)
    assert write_design_statistics(out, out, _config(), tmp_path, tmp_path) == []
    assert not (tmp_path / "group").exists()


def test_retest_and_occupancy_files(tmp_path):
    out = _outcomes(runs=True)
    merged = out.groupby(["subject", "condition", "tracer", "region", "model"],
                         as_index=False).agg({"bp_nd": "mean", "valid": "any"})
    written = write_design_statistics(out, merged, _config(blocked_conditions=("block",)),
                                      tmp_path, tmp_path)
    assert written == ["group/retest.tsv", "group/occupancy.tsv", "group/lassen.tsv"]
    rt = pd.read_csv(tmp_path / "group" / "retest.tsv", sep="\t")
    assert set(rt["region"]) == {"NAcc", "VP", "thalamus"} and (rt["n"] == 6).all()
    occ = pd.read_csv(tmp_path / "group" / "occupancy.tsv", sep="\t")
    assert abs(occ["occupancy"].median() - 0.6) < 0.05
    las = pd.read_csv(tmp_path / "group" / "lassen.tsv", sep="\t")
    assert set(las["input"]) == {"DVR"} and len(las) == 6
