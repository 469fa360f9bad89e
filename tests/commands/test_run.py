"""`petbind run` on the command line: config printing, errors without tracebacks, a run."""

from __future__ import annotations

import tomllib

from petbind.cli import main
from petbind.study.config import DEFAULT_CONFIG


def _cli(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_print_config_prints_the_commented_default(capsys):
    code, out, _ = _cli(["run", "--print-config"], capsys)
    assert code == 0
    assert out == DEFAULT_CONFIG
    assert "# " in out and tomllib.loads(out)["tracers"]["DASB"]["reference_region"]


def test_bad_config_exits_2_naming_file_and_key_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    cfg.write_text('[tracers.DASB]\nmodels = ["srtm"]\n[[contrasts]]\nexpr = "a - b"\n')
    code, _, err = _cli(["run", str(tmp_path), "--config", str(cfg)], capsys)
    assert code == 2
    assert "study.toml" in err and "tracers.DASB.reference_region" in err
    assert "Traceback" not in err


def test_missing_dataset_exits_2_with_the_fix(capsys):
    code, _, err = _cli(["run"], capsys)
    assert code == 2 and "dataset.path" in err

