"""Tests of petbind.io.tomlfile."""

from __future__ import annotations

import pytest

from petbind.errors import ConfigError
from petbind.io.tomlfile import read_toml


def test_read_toml_parses_tables(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text('x = 1\n[t]\nname = "b"\n')
    assert read_toml(p) == {"x": 1, "t": {"name": "b"}}


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    p = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as err:
        read_toml(p, what="study config", read_fix="check the path given to --config")
    msg = str(err.value)
    assert "missing.toml" in msg and "study config" in msg and "--config" in msg


def test_bad_syntax_names_the_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("x = 1\ny = [\n")
    with pytest.raises(ConfigError) as err:
        read_toml(p)
    msg = str(err.value)
    assert "bad.toml" in msg and "not valid TOML" in msg and "line" in msg
