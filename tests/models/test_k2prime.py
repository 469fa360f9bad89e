"""The one k2' policy (petbind.models.k2prime): vocabulary, estimators, sidecar record."""

from __future__ import annotations

import numpy as np
import pytest
from _kinetic_truth import DEMO_SCHEDULE, REF, srtm_truth

from petbind.errors import ModelError
from petbind.models.k2prime import (
    K2PrimePolicy,
    check_policy_for,
    estimate_k2prime,
    k2prime_for_regions,
    parse_k2prime,
    uses_k2prime,
)
from petbind.timing import FrameTiming

TIMING = FrameTiming.from_schedule(DEMO_SCHEDULE)
BPS = np.array([0.2, 1.0, 4.0])
R1S = np.array([0.7, 1.0, 1.4])


@pytest.fixture(scope="module")
def truth():
    """Reference curve and 9 one-tissue targets (3 BP_ND x 3 R1) on the demo frames."""
    cases = [(bp, r1) for bp in BPS for r1 in R1S]
    curves = []
    for bp, r1 in cases:
        ref, tgt = srtm_truth(TIMING.start, TIMING.end, bp, r1)
        curves.append(tgt)
    bp = np.array([c[0] for c in cases])
    r1 = np.array([c[1] for c in cases])
    return ref, np.array(curves), bp, r1


# moved from tests/models/test_reference.py with the estimator
def test_estimate_k2prime_pools_high_binding_regions(truth):
    ref, curves, _, _ = truth
    for method in ("mrtm", "srtm"):
        value, info = estimate_k2prime(TIMING, ref, curves, method=method)
        assert value == pytest.approx(REF["k2"], rel=2e-3)
        assert len(info["selected"]) >= 4
        assert all(info["bp_nd"][i] >= np.median(info["bp_nd"]) for i in info["selected"])



def test_estimate_k2prime_honours_given_high_binding_curves(truth):
    ref, curves, _, _ = truth
    value, info = estimate_k2prime(TIMING, ref, curves, high_binding=[0, 1])
    assert info["selected"] == [0, 1]
    assert value == pytest.approx(REF["k2"], rel=2e-3)
    with pytest.raises(ModelError, match="k2'"):
        estimate_k2prime(TIMING, ref, curves, method="logan")


@pytest.mark.parametrize(("text", "expect"), [
    (0.12, K2PrimePolicy("value", value=0.12)),
    ("0.12", K2PrimePolicy("value", value=0.12)),
    (None, K2PrimePolicy("none")),
    ("None", K2PrimePolicy("none")),
    ("auto", K2PrimePolicy("auto")),
    ("median", K2PrimePolicy("median")),
    ("pooled", K2PrimePolicy("median")),
    ("MRTM@putamen", K2PrimePolicy("region", model="mrtm", region="putamen")),
    ("srtm @ VP", K2PrimePolicy("region", model="srtm", region="VP")),
])
def test_one_vocabulary_parses_every_spelling(text, expect):
    policy = parse_k2prime(text)
    assert policy == expect
    assert parse_k2prime(policy.text) == policy  # round trip through the sidecar text


def test_a_bare_estimator_takes_the_config_region():
    assert parse_k2prime("mrtm", region="midbrain") == K2PrimePolicy(
        "region", model="mrtm", region="midbrain")


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "fast", "logan@VP",
                                 "mrtm@", True])
def test_anything_else_is_refused_with_the_field(bad):
    with pytest.raises(ModelError) as err:
        parse_k2prime(bad, field="--k2prime")
    assert err.value.field == "--k2prime"


def test_estimator_follows_the_catalogue_unless_named():
    assert K2PrimePolicy("auto").estimator("srtm2") == "srtm"
    assert K2PrimePolicy("auto").estimator("bfsrtm") == "srtm"
    assert K2PrimePolicy("auto").estimator("mrtm2") == "mrtm"
    assert K2PrimePolicy("auto").estimator("logan") == "mrtm"
    assert K2PrimePolicy("auto").estimator(["srtm2", "mrtm2"]) == "mrtm"
    assert K2PrimePolicy("median", model="srtm").estimator("mrtm2") == "srtm"


def test_none_is_refused_only_where_k2prime_is_required():
    check_policy_for(K2PrimePolicy("none"), ["logan", "srtm", "bfsrtm"])
    with pytest.raises(ModelError, match="mrtm2"):
        check_policy_for(K2PrimePolicy("none"), ["logan", "mrtm2"])
    assert uses_k2prime("logan", K2PrimePolicy("auto"))
    assert not uses_k2prime("logan", K2PrimePolicy("none"))
    assert uses_k2prime("srtm2", K2PrimePolicy("value", value=0.1))
    assert not uses_k2prime("bfsrtm", K2PrimePolicy("value", value=0.1))
    assert not uses_k2prime("srtm", K2PrimePolicy("auto"))


def test_region_policies_recover_the_true_k2prime_and_say_how(truth):
    ref, curves, bp, _ = truth
    names = [f"r{i}" for i in range(len(curves))]
    for text, n_used in (("auto", None), ("median", 9), ("mrtm@r8", 1), ("srtm@r4", 1)):
        value, info = k2prime_for_regions(parse_k2prime(text), TIMING, ref, curves, names,
                                          for_models="mrtm2")
        assert value == pytest.approx(REF["k2"], rel=2e-3)
        assert info["policy"] == text and info["value_per_min"] == value
        if n_used is not None:
            assert len(info["regions"]) == n_used
    # auto: the higher-binding half (fitted BP_ND >= their median): every BP_ND 4 curve,
    # never a BP_ND 0.2 one (the three BP_ND 1 curves tie up to fitting noise)
    _, info = k2prime_for_regions(parse_k2prime("auto"), TIMING, ref, curves, names,
                                  for_models="srtm2")
    assert info["model"] == "srtm"
    chosen = {int(n[1:]) for n in info["regions"]}
    assert set(np.flatnonzero(bp == 4.0)) <= chosen
    assert not chosen & set(np.flatnonzero(bp == 0.2))
    assert k2prime_for_regions(parse_k2prime("none"), TIMING, ref, curves, names,
                               for_models="logan")[0] is None
    with pytest.raises(ModelError, match="putamen"):
        k2prime_for_regions(parse_k2prime("mrtm@putamen"), TIMING, ref, curves, names,
                            for_models="mrtm2")


def test_a_study_tracers_k2prime_is_the_models_rule(truth):
    """The tracer-level rule lives in models/ (stats may use it); study keeps its name."""
    from types import SimpleNamespace

    from petbind.models.catalogue import K2PRIME_MODELS
    from petbind.models.k2prime import k2prime_for_tracer
    from petbind.study.pipeline import estimate_k2prime as study_name
    from petbind.tac import TACTable

    assert study_name is k2prime_for_tracer
    assert set(K2PRIME_MODELS) == {"srtm2", "mrtm2", "logan"}
    ref, curves, _, _ = truth
    names = [f"r{i}" for i in range(len(curves))]
    tacs = TACTable(TIMING, np.vstack([ref, curves]), ["cer", *names])
    tracer = SimpleNamespace(name="x", models=("mrtm2",), map_model=None,
                             reference_region="cer", model_settings={}, k2prime="auto",
                             k2prime_policy=parse_k2prime("auto"), needs_k2prime=True)
    value, info = k2prime_for_tracer(tracer, tacs, names, "atlas.tsv")
    assert value == pytest.approx(REF["k2"], rel=2e-3)
    assert info["policy"] == "auto" and info["model"] == "mrtm"
