"""`petbind demo`: the options the README and Makefile use; the whole demo on a small study."""

from __future__ import annotations

import io

import pytest

from petbind.cli import main


def test_demo_help_lists_out_scheduler_and_report_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for option in ("--out", "--scheduler", "--no-report", "--no-progress", "--realistic"):
        assert option in out


# moved from tests/study/test_demo.py with run_demo (the report is built by the command layer)
@pytest.mark.slow
def test_demo_simulates_runs_prints_beside_the_truth_and_reports(tmp_path, monkeypatch):
    import tomllib

    from rich.console import Console
    from tests.study.conftest import STUDY_TOML, small_sim_config

    import petbind.report
    from petbind.commands.demo import run_demo
    from petbind.study.config import parse_config
    from petbind.study.demo import simulate_if_needed

    built = []

    def fake_build_report(out_dir, scheduler=None):  # the real builder has its own tests
        built.append(out_dir)
        return out_dir / "report.html"

    monkeypatch.setattr(petbind.report, "build_report", fake_build_report)
    study = parse_config(tomllib.loads(STUDY_TOML))
    buf = io.StringIO()
    console = Console(file=buf, width=100)
    result = run_demo(tmp_path / "demo", sim_config=small_sim_config(0.0, 0.0, subjects=2),
                      study_config=study, progress=False, console=console,
                      err_console=console)
    text = buf.getvalue()
    assert result.bids_dir == tmp_path / "demo" / "bids"
    assert (result.bids_dir / "derivatives" / "petbind-sim" / "truth.tsv").exists()
    assert (result.out_dir / "group" / "roi_stats.tsv").exists()
    assert "ketamine - baseline" in text and "truth" in text
    assert "1/16" in text  # the smallest attainable permutation p is stated
    assert built == [result.out_dir] and result.report == result.out_dir / "report.html"
    assert {"simulate", "scans", "region_statistics", "voxel_statistics"} <= set(result.seconds)
    # a second demo reuses the complete simulated dataset
    assert simulate_if_needed(result.bids_dir) is False

@pytest.mark.parametrize(("args", "word"), [
    ([], None),                                   # the default demo: in-process
    (["--realistic"], "local"),                   # the raw-scan demo: a local cluster
    (["--realistic", "--scheduler", "sync"], "sync"),
])
def test_realistic_demo_defaults_to_one_local_cluster_for_both_analyses(
        monkeypatch, tmp_path, args, word):
    import contextlib
    from types import SimpleNamespace

    import petbind.commands.demo as cmd

    seen: dict = {}

    @contextlib.contextmanager
    def fake_shared(value):
        seen["word"] = value
        yield ("engine", value)

    def fake_run_demo(out, *, scheduler, **kwargs):
        seen["scheduler"] = scheduler
        return SimpleNamespace(report=None)

    monkeypatch.setattr(cmd, "shared_scheduler", fake_shared)
    monkeypatch.setattr(cmd, "run_demo", fake_run_demo)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), "--no-progress", *args])
    assert e.value.code == 0
    # the one scheduler opened by the command is what both analyses of run_demo get
    assert seen["word"] == word and seen["scheduler"] == ("engine", word)
