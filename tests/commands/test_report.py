"""``petbind report OUTDIR``: writes the page and prints its path; errors exit 2."""

from __future__ import annotations

import json

import pytest

from petbind.cli import main


def test_report_command_writes_report_of_a_sparse_output_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "group").mkdir(parents=True)
    (out / "group" / "summary.json").write_text(json.dumps(
        {"n_scans": 0, "conditions": ["baseline"], "tracers": ["DASB"],
         "warnings": ["no scan passed validation"]}))
    with pytest.raises(SystemExit) as done:
        main(["report", str(out)])
    assert done.value.code in (0, None)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "no scan passed validation" in page
    assert "No region statistics in this output" in page
    assert str(out / "report.html") in capsys.readouterr().out.replace("\n", "")


def test_report_command_on_a_missing_folder_exits_2_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["report", str(tmp_path / "absent")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "absent" in err and "fix:" in err and "Traceback" not in err
