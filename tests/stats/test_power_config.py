"""The ``[power]`` section of a study config: defaults, values and one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from petbind.errors import ConfigError, PetbindError
from petbind.stats.power_config import PowerConfig, parse_n, parse_power
from petbind.study.config import parse_config

BASE = {"tracers": {"X": {"reference_region": "cerebellum"}},
        "contrasts": ["ketamine - baseline", {"expr": "blocked - baseline", "name": "block"}]}


def config(power: dict, **kw):
    return parse_config({**BASE, "power": power}, source="study.toml", **kw)


def test_absent_section_is_disabled_with_the_documented_defaults():
    cfg = parse_config(BASE, source="study.toml")
    assert cfg.power == PowerConfig()
    assert not cfg.power.enabled and cfg.power.n == (4, 6, 8, 10, 12)
    assert cfg.power.n_studies == 200 and cfg.power.alpha == 0.05 and cfg.power.from_study


def test_values_are_read_and_survive_to_dict(tmp_path):
    cfg = config({"enabled": True, "n": "3..6", "n_studies": 50, "alpha": 0.01, "seed": 7,
                  "models": "primary", "simulate_config": "design.toml",
                  "effects": ["X:ketamine:NAcc=15"], "regions": ["NAcc", "VP"],
                  "contrasts": ["block"], "from_study": False}, base_dir=tmp_path)
    p = cfg.power
    assert p.enabled and p.n == (3, 4, 5, 6) and p.n_studies == 50 and p.alpha == 0.01
    assert p.seed == 7 and p.models == "primary" and not p.from_study
    assert p.simulate_config == tmp_path / "design.toml"  # relative to the config file
    assert p.effects == ("X:ketamine:NAcc=15",) and p.regions == ("NAcc", "VP")
    assert p.contrasts == ("block",)
    again = parse_config(tomllib.loads(cfg.to_toml()), source="again.toml")
    assert again.power == p


def test_n_as_list_or_text():
    assert parse_n([8, 4, 4, 6], "power.n") == (4, 6, 8)
    assert parse_n("4, 6,8", "--n") == (4, 6, 8)
    assert parse_n("3..5", "--n") == (3, 4, 5)


@pytest.mark.parametrize("power, key, words", [
    ({"n": [1, 4]}, "power.n", ">= 2"),
    ({"n": "four"}, "power.n", "cannot read"),
    ({"n_studies": "many"}, "power.n_studies", "integer"),
    ({"n_studies": 1}, "power.n_studies", "outside"),
    ({"alpha": 1.5}, "power.alpha", "(0, 1)"),
    ({"models": "best"}, "power.models", "not allowed"),
    ({"enabled": "yes"}, "power.enabled", "true or false"),
    ({"effects": ["X-ketamine-NAcc=15"]}, "power.effects[0]", "cannot read effect"),
    ({"contrasts": ["placebo - baseline"]}, "power.contrasts[0]", "not a contrast"),
    ({"regions": "NAcc"}, "power.regions", "list of strings"),
    ({"simulate_config": 3}, "power.simulate_config", "string"),
    ({"n_subjects": 8}, "power.n_subjects", "unknown key"),
])
def test_errors_are_one_line_and_name_the_key(power, key, words):
    with pytest.raises(ConfigError) as e:
        config(power)
    err = e.value
    assert isinstance(err, PetbindError) and err.field == key and err.fix
    assert err.path == "study.toml"
    text = str(err)
    assert "\n" not in text and f"'{key}'" in text and words in text


def test_power_must_be_a_table():
    with pytest.raises(ConfigError) as e:
        parse_power(3, source="s.toml")
    assert e.value.field == "power"


def test_the_cli_reads_n_with_the_same_rule():
    with pytest.raises(ConfigError) as e:
        parse_n("1,4", "--n")
    assert e.value.field == "--n" and "--n 4,6,8,10,12" in str(e.value)


def test_study_config_reference_documents_every_power_key():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "study-config.md").read_text()
    for key in ("power.enabled", "power.n", "power.n_studies", "power.effects",
                "power.from_study", "power.simulate_config", "power.contrasts"):
        assert f"`{key}`" in doc
