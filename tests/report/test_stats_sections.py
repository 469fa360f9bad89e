"""Report sections of the design statistics: occupancy / Lassen states its method."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from petbind.report import figures
from petbind.report.stats_sections import occupancy_section
from petbind.stats.occupancy import occupancy_statistics


def test_occupancy_section_states_the_eiv_method_and_shows_ols_beside_it(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(3):
        for i, bp in enumerate((0.5, 1.0, 1.6, 2.4)):
            for cond, f in (("baseline", 1.0), ("block", 0.5)):
                rows.append({"subject": f"{s:02d}", "condition": cond, "tracer": "X",
                             "region": f"r{i}", "model": "srtm", "valid": True,
                             "bp_nd": bp * f * (1 + 0.05 * rng.standard_normal())})
    per, las = occupancy_statistics(pd.DataFrame(rows), baseline="baseline",
                                    blocked=["block"])
    (tmp_path / "group").mkdir()
    per.to_csv(tmp_path / "group" / "occupancy.tsv", sep="\t", index=False)
    las.to_csv(tmp_path / "group" / "lassen.tsv", sep="\t", index=False)
    html = str(occupancy_section(SimpleNamespace(root=tmp_path), figures))
    assert "Deming regression" in html and "jackknife" in html
    assert "OLS occupancy % [95 % CI]" in html
    assert html.count("<img") == 1
    # the EIV estimate is the one in the main column
    first = las.iloc[0]
    assert f"{100 * first['occupancy']:.1f} [" in html
