"""A newcomer adds a reference-tissue model: one file and one catalogue entry (issue 15).

The test writes a small model in a module of its own (a late-frame ratio:
the mean target-to-reference ratio of the last N frames, SUVR-like), adds
ONE catalogue entry for it (:func:`petbind.models.registry.register_model`,
the run-time form of a :class:`~petbind.models.catalogue.ModelSpec`), and
checks that ``petbind fit`` runs it - the same command, the same
entry point - with the derived parameters the entry declares, and that the
catalogue-derived ``--model`` help and catalogue list name it. Expected values
come from the independent one-tissue truth of ``_kinetic_truth.py``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from _kinetic_truth import DEMO_SCHEDULE, srtm_truth

from petbind.timing import FrameTiming

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "commands"))
from _fit_cli import run_cli

TIMING = FrameTiming.from_schedule(DEMO_SCHEDULE)

#: The newcomer's one file: a class over ReferenceModel that solves for one number.
MODEL_FILE = '''
"""Late-frame ratio: mean target / reference over the last ``n_late`` frames."""

import numpy as np

from petbind.models.reference.common import ReferenceModel, Result


class LateRatio(ReferenceModel):
    name = "lateratio"
    n_params = 1
    min_frames = 1

    def __init__(self, timing, ref, *, n_late=3, **kw):
        super().__init__(timing, ref, **kw)
        self.late = np.zeros(timing.n_frames, dtype=bool)
        self.late[-n_late:] = True

    def _settings(self):
        return {"n_late": int(self.late.sum())}

    def _fit(self, y, w):
        ratio = (y[:, self.late] / self.ref[self.late]).mean(axis=-1)
        return Result({"suvr": ratio}, {}, ratio[:, None] * self.ref,
                      np.isfinite(ratio) & (ratio > 0))
'''


@pytest.fixture()
def new_model(tmp_path, monkeypatch):
    """Write the model file, put it on the path, add its one catalogue entry."""
    from petbind.models.catalogue import Derived
    from petbind.models.registry import _REGISTRY, register_model

    (tmp_path / "newcomer_ratio.py").write_text(textwrap.dedent(MODEL_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))

    def bp(p, s):
        return p["suvr"] - 1.0

    register_model("lateratio", "newcomer_ratio:LateRatio", input="reference",
                   description="late-frame target/reference ratio (newcomer test)",
                   params=("suvr", "bp_nd"), citation="A. Newcomer, J Test 2026;1:1.",
                   derived=(Derived("bp_nd", ("suvr",), "SUVR - 1", bp),), gof_rule=False)
    yield "lateratio"
    _REGISTRY.pop("lateratio")
    sys.modules.pop("newcomer_ratio", None)


def test_a_new_reference_model_runs_through_petbind_fit(new_model, tmp_path):
    cols = {"frame_start": TIMING.start_s, "frame_end": TIMING.start_s + TIMING.duration_s}
    truth = {"putamen": (2.0, 1.1), "cortex": (0.4, 1.2)}
    for name, (bp, r1) in truth.items():
        ref, cols[name] = srtm_truth(TIMING.start, TIMING.end, bp, r1)
    cols["cerebellum"] = ref
    table = tmp_path / "sub-01_tacs.tsv"
    pd.DataFrame(cols).to_csv(table, sep="\t", index=False)
    table.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL"}))
    out = tmp_path / "res.tsv"
    assert run_cli(["fit", str(table), "--model", new_model, "--ref", "cerebellum",
                    "--out", str(out)]) == 0
    df = pd.read_csv(out, sep="\t").set_index("region")
    last = slice(-3, None)
    for name in truth:
        expect = float(np.mean(cols[name][last] / ref[last]))  # the ratio, by hand
        assert df.loc[name, "suvr"] == pytest.approx(expect, rel=1e-5)  # TSV: 6 digits
        assert df.loc[name, "bp_nd"] == pytest.approx(expect - 1.0, rel=1e-5)  # derived
        assert bool(df.loc[name, "valid"])
    # late in the scan the ratio approaches DVR (Carson 1993): near the truth's 1 + BP_ND
    assert df.loc["cortex", "suvr"] == pytest.approx(1.4, rel=0.1)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["Model"] == new_model and side["Settings"]["n_late"] == 3
    assert side["Citation"] == "A. Newcomer, J Test 2026;1:1."
    assert side["Units"] == {"suvr": "unitless", "bp_nd": "unitless"}


def test_a_new_model_is_in_the_catalogue_derived_help_and_lists(new_model):
    from typer.testing import CliRunner

    from petbind.commands import fit as fit_command
    from petbind.models import available_models
    from petbind.models.catalogue import model_choices, model_names

    assert new_model in model_names("reference") and new_model in available_models()
    assert model_choices("reference").endswith(f"| {new_model}")
    app = typer.Typer()
    fit_command.register(app)
    app.command("other")(lambda: None)  # two commands: `fit` is a sub-command
    text = CliRunner().invoke(app, ["fit", "--help"], terminal_width=400).output
    assert new_model in text


def test_a_new_models_citation_reaches_the_reports_methods(new_model):
    from petbind.report.sections.methods import _citations

    citations, model_citation = _citations()
    assert citations[model_citation[new_model]] == "A. Newcomer, J Test 2026;1:1."
    # a model the catalogue does not know is still not cited
    assert "nosuchmodel" not in model_citation
