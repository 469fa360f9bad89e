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
    monkeypatch.setattr(petbind.report, "build_report",
                        lambda out, scheduler=None: out / "report.html")
    code, out, err = _cli(["run", str(tmp_path), "--config", str(cfg)], capsys)
    assert code == 0, err
    text = " ".join((out + err).split())
    assert text.count(said_early) == 1
    assert text.count("[bold]ketamine[/bold]") == 1
    assert "report.html" in text


def test_the_study_and_its_report_share_one_scheduler(tmp_path, capsys, monkeypatch):
    # `petbind run --scheduler local` starts one local cluster: the scan tasks, the
    # voxel flips and the report's figures all run on it (not a cluster per stage)
    import contextlib

    import pandas as pd

    import petbind.compute
    import petbind.report
    import petbind.study.pipeline as pipeline

    cfg = tmp_path / "study.toml"
    cfg.write_text('[tracers.DASB]\nreference_region = "cerebellum"\n'
                   '[[contrasts]]\nexpr = "ketamine - baseline"\n')
    opened, used = [], {}

    @contextlib.contextmanager
    def fake_shared(word, **_kw):
        opened.append(word)
        yield f"cluster for {word}"

    def fake_run_study(root, config, *, engine=None, scheduler=None, **kw):
        used["study"], used["word"] = engine, scheduler
        return pipeline.StudyResult(out_dir=tmp_path / "out", outcomes=pd.DataFrame(),
                                    roi_stats=pd.DataFrame(), mixed=pd.DataFrame(),
                                    summary={"highlights": []}, warnings=[], seconds={})

    def fake_report(out, scheduler=None):
        used["report"] = scheduler
        return out / "report.html"

    monkeypatch.setattr(petbind.compute, "shared_scheduler", fake_shared)
    monkeypatch.setattr(pipeline, "run_study", fake_run_study)
    monkeypatch.setattr(petbind.report, "build_report", fake_report)
    code, _, err = _cli(["run", str(tmp_path), "--config", str(cfg), "--scheduler", "local:2"],
                        capsys)
    assert code == 0, err
    assert opened == ["local:2"]
    assert used == {"study": "cluster for local:2", "word": "local:2",
                    "report": "cluster for local:2"}
