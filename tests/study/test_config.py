"""Study config: the commented default validates; every bad key is named."""

from __future__ import annotations

import tomllib

import pytest

from petbind.errors import ConfigError
from petbind.study.config import DEFAULT_CONFIG, demo_config, load_config, parse_config


def _default() -> dict:
    return tomllib.loads(DEFAULT_CONFIG)


def test_default_config_has_the_founding_study_contrasts_and_tracers():
    cfg = load_config()
    assert set(cfg.tracers) == {"AZ10419369", "DASB"}
    assert [c.expr for c in cfg.contrasts] == [
        "ketamine - baseline", "ketaminenbqx - baseline",
        "(ketamine - baseline) - (ketaminenbqx - baseline)"]
    assert cfg.conditions == ("baseline", "ketamine", "ketaminenbqx")
    assert cfg.tracers["DASB"].reference_region == "cerebellum"
    assert cfg.statistics.voxel.n_permutations == 5000


def test_demo_config_ships_as_package_data_and_validates():
    cfg = demo_config()
    assert cfg.tracers["AZ10419369"].map_model
    assert len(cfg.contrasts) == 3


def test_resolved_config_round_trips_through_toml():
    cfg = load_config()
    again = parse_config(tomllib.loads(cfg.to_toml()))
    assert again.to_dict() == cfg.to_dict()


def test_relative_dataset_path_is_relative_to_the_config_file(tmp_path):
    p = tmp_path / "study.toml"
    p.write_text(DEFAULT_CONFIG.replace('# path = "/data/ketamine_study"', 'path = "bids"'))
    assert load_config(p).dataset == tmp_path / "bids"


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["tracers"]["DASB"].pop("reference_region"), "tracers.DASB.reference_region"),
    (lambda d: d["tracers"]["DASB"].update(models=["srtm", "magic"]), "tracers.DASB.models"),
    (lambda d: d["tracers"]["DASB"].update(primary_model="mrtm"),
     "tracers.DASB.primary_model"),
    (lambda d: d["tracers"]["DASB"].update(k2prime="guess"), "tracers.DASB.k2prime"),
    (lambda d: d["tracers"]["DASB"].update(k2prime=-0.1), "tracers.DASB.k2prime"),
    (lambda d: d["tracers"]["DASB"].update(target_regions=["NAcc", "cerebellum"]),
     "tracers.DASB.target_regions"),
    (lambda d: d["tracers"]["DASB"].update(map_model="nonsense"), "tracers.DASB.map_model"),
    (lambda d: d["tracers"]["DASB"].update(colour="red"), "tracers.DASB.colour"),
    (lambda d: d["contrasts"].append({"expr": "ketamine + baseline"}), "contrasts[3].expr"),
    (lambda d: d.update(contrasts=[]), "contrasts"),
    (lambda d: d["statistics"].update(alpha=2), "statistics.alpha"),
    (lambda d: d["statistics"].update(runs="average"), "statistics.runs"),
    (lambda d: d["statistics"].update(baseline_condition="placebo"),
     "statistics.baseline_condition"),
    (lambda d: d["statistics"]["voxel"].update(n_permutations=1.5),
     "statistics.voxel.n_permutations"),
    (lambda d: d["dataset"].update(condition_entity="trc"), "dataset.condition_entity"),
    (lambda d: d.update(tracers={}), "tracers"),
    (lambda d: d.update(extras=1), "extras"),
    (lambda d: d["parametric"].update(pet_fwhm_mm=-1.0), "parametric.pet_fwhm_mm"),
    (lambda d: d["parametric"].update(fwhm=3.0), "parametric.fwhm"),
])
def test_bad_config_raises_config_error_naming_the_key(edit, field):
    data = _default()
    edit(data)
    with pytest.raises(ConfigError) as e:
        parse_config(data, source="study.toml")
    assert e.value.field == field
    assert "study.toml" in str(e.value) and e.value.fix


def test_unreadable_and_non_toml_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[dataset\n")
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        load_config(bad)
    assert str(bad) in str(e.value)


def test_k2prime_takes_the_one_policy_vocabulary():
    # the words of petbind.models.k2prime, shared with petbind fit / parametric
    d = _default()
    d["tracers"]["DASB"].update(k2prime="srtm@midbrain", k2prime_region="")
    policy = parse_config(d).tracers["DASB"].k2prime_policy
    assert (policy.kind, policy.model, policy.region) == ("region", "srtm", "midbrain")
    d["tracers"]["DASB"].update(k2prime="auto")
    assert parse_config(d).tracers["DASB"].k2prime_policy.kind == "auto"
    # Logan without k2' (issue 17): allowed when no configured model requires k2'
    d["tracers"]["DASB"].update(k2prime="none", models=["srtm", "logan"], map_model="logan",
                                primary_model="srtm")
    t = parse_config(d).tracers["DASB"]
    assert not t.needs_k2prime and t.k2prime_policy.kind == "none"
    d["tracers"]["DASB"].update(models=["srtm", "mrtm2"], map_model="")
    with pytest.raises(ConfigError) as err:
        parse_config(d)
    assert err.value.field == "tracers.DASB.k2prime" and "mrtm2" in err.value.message


def test_parametric_pet_smoothing_is_off_by_default_and_the_demo_sets_3_mm():
    assert load_config().parametric.pet_fwhm_mm == 0.0
    assert demo_config().parametric.pet_fwhm_mm == 3.0
    data = _default()
    data["parametric"]["pet_fwhm_mm"] = 2.5
    cfg = parse_config(data)
    assert cfg.parametric.pet_fwhm_mm == 2.5
    assert cfg.to_dict()["parametric"] == {"pet_fwhm_mm": 2.5}
