"""`petbind run` on the command line: config printing, errors without tracebacks, a run."""

from __future__ import annotations

import tomllib

from tests.commands._fit_cli import cli_output as _cli

from petbind.study.config import DEFAULT_CONFIG


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



def test_warnings_keep_bracketed_text_and_print_once(tmp_path, capsys, monkeypatch):
    import pandas as pd

    import petbind.report
    import petbind.study.pipeline as pipeline

    cfg = tmp_path / "study.toml"
    cfg.write_text('[tracers.DASB]\nreference_region = "cerebellum"\n'
                   '[[contrasts]]\nexpr = "ketamine - baseline"\n')
    said_early = "sub-03 [11C]DASB has no ketamine scan"
    late = "sub-01 [bold]ketamine[/bold]: 1 invalid region fit(s): srtm/VP"

    def fake_run_study(root, config, *, log, **kw):
        log(f"warning: {said_early}")
        return pipeline.StudyResult(out_dir=tmp_path / "out", outcomes=pd.DataFrame(),
                                    roi_stats=pd.DataFrame(), mixed=pd.DataFrame(),
                                    summary={"highlights": []}, warnings=[said_early, late],
                                    seconds={})

    monkeypatch.setattr(pipeline, "run_study", fake_run_study)
    monkeypatch.setattr(petbind.report, "build_report", lambda out: out / "report.html")
    code, out, err = _cli(["run", str(tmp_path), "--config", str(cfg)], capsys)
    assert code == 0, err
    text = " ".join((out + err).split())
    assert text.count(said_early) == 1
    assert text.count("[bold]ketamine[/bold]") == 1
    assert "report.html" in text
