"""docs/study-config.md is generated from the parser's defaults and names every key."""

from __future__ import annotations

from pathlib import Path

from petbind.study.reference import MEANING, config_reference, defaults

DOC = Path(__file__).resolve().parents[2] / "docs" / "study-config.md"


def test_every_key_the_parser_fills_in_has_a_meaning_and_nothing_else_does():
    keys = set(defaults())
    assert keys == set(MEANING)


def test_defaults_are_the_parsers():
    d = defaults()
    assert d["statistics.alpha"] == 0.05 and d["statistics.voxel.n_permutations"] == 5000
    assert d["tracers.<trc>.exclude_regions"] == ["white_matter", "csf"]
    assert d["dataset.condition"] == "" and d["tracers.<trc>.reference_region"] is None


def test_the_doc_is_the_generators_output():
    assert DOC.read_text(encoding="utf-8") == config_reference(), (
        "regenerate: python -m petbind.study.reference > docs/study-config.md")
