"""The model registry shared by the CLI, parametric maps and the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.errors import ModelError
from petbind.models import available_models, get_model, make_model, model_spec, register_model
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule([(6, 10), (4, 60), (5, 300)])
REF = np.concatenate([np.linspace(1, 10, 6), np.linspace(9, 6, 4), np.linspace(5, 2, 5)])


def test_every_reference_model_of_the_cli_contract_is_registered():
    names = set(available_models("reference"))
    assert {"srtm", "srtm2", "bfsrtm", "mrtm", "mrtm2", "logan", "suvr"} <= names
    assert model_spec("SRTM").name == "srtm"


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match="srtm"):
        get_model("srtm3", timing=TIMING, ref=REF)


def test_reference_model_without_reference_is_refused():
    with pytest.raises(ModelError, match="--ref"):
        get_model("srtm", timing=TIMING)


def test_k2prime_is_required_or_refused_as_the_model_says():
    with pytest.raises(ModelError, match="needs a fixed k2'"):
        get_model("mrtm2", timing=TIMING, ref=REF)
    with pytest.raises(ModelError, match="does not take"):
        get_model("srtm", timing=TIMING, ref=REF, k2prime=0.1)
    assert get_model("bfsrtm", timing=TIMING, ref=REF, k2prime=0.1).k2prime == 0.1
    assert make_model("srtm", TIMING, REF, k2prime=None).name == "srtm"


def test_registered_factory_is_returned_and_plasma_models_need_blood():
    class Dummy:
        def __init__(self, timing, **kw):
            self.kw = kw

    register_model("dummy-plasma", Dummy, input="plasma", description="test only")
    try:
        with pytest.raises(ModelError, match="--blood"):
            get_model("dummy-plasma", timing=TIMING)
        m = get_model("dummy-plasma", timing=TIMING, blood=object(), vb=0.05)
        assert m.kw["vb"] == 0.05
    finally:
        from petbind.models import registry

        registry._REGISTRY.pop("dummy-plasma")
