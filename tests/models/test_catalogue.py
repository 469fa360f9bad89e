"""The model catalogue is the one description of every model, and the tables derive from it."""

from __future__ import annotations

import importlib

import pytest

from petbind.models.catalogue import CATALOGUE, PARAMETERS, model_choices, model_names

SPECS = {s.name: s for s in CATALOGUE}


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_every_model_has_units_a_citation_and_a_factory_of_its_name(spec):
    assert spec.params, spec.name
    for p in spec.params:
        assert p in PARAMETERS, f"{spec.name}: parameter {p} has no unit"
        assert PARAMETERS[p].unit and PARAMETERS[p].description
    assert spec.citation.count(";") >= 1 and spec.citation.rstrip().endswith(".")
    module, _, attr = spec.factory.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    assert cls.name == spec.name
    if spec.k2prime != "no":
        assert spec.k2prime_estimator in ("mrtm", "srtm")
    if spec.k2prime_by_default:
        assert spec.k2prime != "no"


def test_looking_a_model_up_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys; from petbind.models import model_spec; model_spec('1tcm'); "
            "model_spec('srtm'); print(sorted(m for m in sys.modules if m in "
            "('scipy', 'petbind.models.reference', 'petbind.models.plasma')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_hand_tables_of_other_modules_are_the_catalogue():
    from petbind.parametric import K2PRIME_MODELS, MAP_MODELS, PARAM_UNITS, WORK_BYTES
    from petbind.report.build import _MODEL_CITATION, CITATIONS
    from petbind.study.config import K2PRIME_MODELS as STUDY_K2
    from petbind.study.config import REGION_MODELS

    reference = set(model_names("reference"))
    assert reference == {"srtm", "srtm2", "bfsrtm", "mrtm", "mrtm2", "logan", "suvr"}
    assert set(REGION_MODELS) == reference == set(MAP_MODELS)
    assert set(K2PRIME_MODELS) == set(STUDY_K2) == {"srtm2", "mrtm2", "logan"}
    assert set(WORK_BYTES) == set(MAP_MODELS)
    for s in CATALOGUE:
        for p in s.params:
            assert PARAM_UNITS[p] == PARAMETERS[p].unit
        assert CITATIONS[_MODEL_CITATION[s.name.replace("-", "")]] == s.citation
    assert model_choices("plasma") == "1tcm | 2tcm | 2tcm-irr | logan-plasma | patlak | ma1"


def test_cli_help_lists_every_model_from_the_catalogue():
    from typer.testing import CliRunner

    from petbind.cli import app

    runner = CliRunner(env={"COLUMNS": "400"})
    text = " ".join(runner.invoke(app, ["fit", "--help"]).output.split())
    for name in model_names():
        assert name in text
    text = " ".join(runner.invoke(app, ["parametric", "--help"]).output.split())
    assert model_choices("reference", mappable=True) in text
