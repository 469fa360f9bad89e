"""Simulator study-design file: defaults from the primer, errors that name the key."""

from __future__ import annotations

import copy
import tomllib

import pytest

from petbind.errors import ConfigError
from petbind.simulate.config import default_config_text, load_config, parse_config
from petbind.simulate.phantom import REGIONS

DEFAULT = tomllib.loads(default_config_text())

# PET_PRIMER.md section 5, typed in here (not read from the config under test)
PRIMER_BP = {
    "AZ10419369": {"NAcc": (1.2, 1.0), "VP": (1.8, 0.95), "caudate": (0.9, 1.05),
                   "putamen": (1.3, 1.05), "occipital_cortex": (1.4, 1.1),
                   "thalamus": (0.55, 1.05)},
    "DASB": {"midbrain": (2.5, 0.9), "thalamus": (1.8, 1.0), "NAcc": (1.5, 1.0),
             "VP": (1.6, 1.0), "caudate": (1.2, 1.05), "putamen": (1.3, 1.05),
             "frontal_cortex": (0.35, 1.1), "occipital_cortex": (0.35, 1.1),
             "other_cortex": (0.35, 1.1)},
}
PRIMER_EFFECT_PCT = {  # (tracer, condition): (NAcc/VP, elsewhere)
    ("AZ10419369", "ketamine"): (20, 5), ("AZ10419369", "ketaminenbqx"): (0, 0),
    ("DASB", "ketamine"): (-20, -10), ("DASB", "ketaminenbqx"): (-20, -10),
}


def raw(**changes):
    d = copy.deepcopy(DEFAULT)
    d.update(changes)
    return d


def test_default_is_the_founding_study():
    cfg = load_config()
    assert cfg.subjects == ["01", "02", "03", "04"]
    assert cfg.conditions == ["baseline", "ketamine", "ketaminenbqx"]
    assert [t.name for t in cfg.tracers] == ["AZ10419369", "DASB"]
    assert cfg.n_scans == 24
    assert cfg.timing.n_frames == 29
    assert cfg.timing.end[-1] == pytest.approx(90.0)
    assert cfg.fwhm_mm == 2.8
    assert cfg.reference == "cerebellum"


def test_default_regions_and_reference_follow_the_primer():
    cfg = load_config()
    for tr in cfg.tracers:
        for region, (bp, r1) in PRIMER_BP[tr.name].items():
            assert tr.regions[region].bp_nd == bp
            assert tr.regions[region].r1 == r1
        assert tr.regions["cerebellum"].bp_nd == 0.0
        assert tr.k1prime == 0.4
    assert cfg.tracers[0].k2prime == 0.1
    assert cfg.tracers[1].k2prime == 0.06
    assert 0.08 <= cfg.between_subject_cv <= 0.10


def test_default_drug_effects_follow_the_primer():
    cfg = load_config()
    for tr in cfg.tracers:
        assert tr.effect("baseline").bp_factor("NAcc") == 1.0
        for cond in ("ketamine", "ketaminenbqx"):
            target, elsewhere = PRIMER_EFFECT_PCT[(tr.name, cond)]
            eff = tr.effect(cond)
            for region in ("NAcc", "VP"):
                assert eff.bp_factor(region) == pytest.approx(1 + target / 100)
            for region in ("caudate", "thalamus", "frontal_cortex", "midbrain"):
                assert eff.bp_factor(region) == pytest.approx(1 + elsewhere / 100)
            assert eff.r1_factor("NAcc") == 1.0


def test_overrides_replace_design_noise_and_seed():
    cfg = load_config(subjects=2, tracers=["DASB"], conditions=["baseline", "ketamine"],
                      noise=0.0, seed=5)
    assert cfg.subjects == ["01", "02"]
    assert [t.name for t in cfg.tracers] == ["DASB"]
    assert cfg.n_scans == 4
    assert cfg.noise == 0.0
    assert cfg.seed == 5


def test_config_file_is_read_and_named_in_errors(tmp_path):
    p = tmp_path / "study.toml"
    p.write_text(default_config_text().replace("NAcc = { bp_nd = 1.2", "Nacc = { bp_nd = 1.2"),
                 encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.path == str(p)
    assert e.value.field == "tracer.AZ10419369.regions.Nacc"
    assert "unknown key 'Nacc'" in str(e.value)


def bad(d):
    with pytest.raises(ConfigError) as e:
        parse_config(d, "study.toml")
    return e.value


def test_unknown_region_is_an_error_naming_the_key():
    d = raw()
    d["tracer"]["DASB"]["regions"]["hippocampus"] = {"bp_nd": 1.0, "r1": 1.0}
    assert bad(d).field == "tracer.DASB.regions.hippocampus"


def test_unknown_region_in_a_drug_effect_is_an_error():
    d = raw()
    d["tracer"]["DASB"]["effects"]["ketamine"]["bp_nd_change_pct"]["raphe"] = -30.0
    assert bad(d).field == "tracer.DASB.effects.ketamine.bp_nd_change_pct.raphe"


def test_negative_bp_is_an_error_naming_the_key():
    d = raw()
    d["tracer"]["AZ10419369"]["regions"]["VP"]["bp_nd"] = -0.5
    err = bad(d)
    assert err.field == "tracer.AZ10419369.regions.VP.bp_nd"
    assert "-0.5" in str(err)


@pytest.mark.parametrize(("key", "value"), [("subjects", 0), ("conditions", []),
                                            ("tracers", [])])
def test_empty_design_is_an_error(key, value):
    err = bad(raw(**{key: value}))
    assert err.field == key
    assert "empty design" in err.message


def test_overlapping_frames_are_an_error_naming_the_key():
    d = raw(frames={"start_s": [0, 60, 100], "duration_s": [60, 60, 60]})
    err = bad(d)
    assert err.field == "frames.duration_s"
    assert "overlaps" in err.message


def test_missing_region_unknown_tracer_and_bad_voxel_multiple_are_errors():
    d = raw()
    del d["tracer"]["DASB"]["regions"]["csf"]
    assert bad(d).field == "tracer.DASB.regions.csf"
    assert bad(raw(tracers=["PIB"])).field == "tracers"
    d = raw()
    d["scanner"]["voxel_mm"] = 1.5
    assert bad(d).field == "scanner.voxel_mm"


def test_reference_region_must_have_no_specific_binding():
    d = raw()
    d["tracer"]["DASB"]["regions"]["cerebellum"]["bp_nd"] = 0.1
    assert bad(d).field == "tracer.DASB.regions.cerebellum"


def test_typo_in_a_section_key_is_an_error():
    d = raw()
    d["scanner"]["fwhm"] = 3.0
    assert bad(d).field == "scanner.fwhm"


def test_invalid_toml_is_a_config_error(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("subjects = [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_every_region_is_configured_for_every_default_tracer():
    for name in ("AZ10419369", "DASB"):
        assert set(DEFAULT["tracer"][name]["regions"]) == set(REGIONS)


def test_subject_labels_and_r1_effects_can_be_given():
    d = raw(subjects=["m1", "m2"])
    d["tracer"]["DASB"]["effects"]["ketamine"]["r1_change_pct"] = {"NAcc": 10.0}
    cfg = parse_config(d)
    assert cfg.subjects == ["m1", "m2"]
    eff = cfg.tracers[1].effect("ketamine")
    assert eff.r1_factor("NAcc") == pytest.approx(1.1)
    assert eff.r1_factor("VP") == 1.0
    assert bad(raw(subjects=["sub-1"])).field == "subjects"


def test_anatomy_defaults_keep_every_subject_in_template_position():
    cfg = load_config()
    assert cfg.native_position is False
    assert cfg.max_offset_mm == 5.0
    assert cfg.max_anatomy_rotation_deg == 8.0
    on = load_config(native_position=True, motion=True)
    assert on.native_position is True
    assert on.motion is True


@pytest.mark.parametrize(("key", "value", "words"), [
    ("max_offset_mm", -1.0, "must be >= 0"),
    ("max_rotation_deg", -0.5, "must be >= 0"),
    ("max_rotation_deg", 45.0, "must be <= 20"),
    ("native_position", "yes", "true or false"),
    ("offset_mm", 3.0, "unknown key 'offset_mm'"),
])
def test_bad_anatomy_key_is_an_error_naming_it(key, value, words):
    d = raw()
    d["anatomy"][key] = value
    err = bad(d)
    assert err.field == f"anatomy.{key}"
    assert words in err.message
    assert "study.toml" in str(err) and f"anatomy.{key}" in str(err)
