"""`petbind demo` is registered with the options the README and Makefile use."""

from __future__ import annotations

import pytest

from petbind.cli import main


def test_demo_help_lists_out_scheduler_and_report_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for option in ("--out", "--scheduler", "--no-report", "--no-progress", "--realistic"):
        assert option in out



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
    import petbind.study.demo as study_demo

    seen: dict = {}

    @contextlib.contextmanager
    def fake_shared(value):
        seen["word"] = value
        yield ("engine", value)

    def fake_run_demo(out, *, scheduler, **kwargs):
        seen["scheduler"] = scheduler
        return SimpleNamespace(report=None)

    monkeypatch.setattr(cmd, "shared_scheduler", fake_shared)
    monkeypatch.setattr(study_demo, "run_demo", fake_run_demo)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "d"), "--no-progress", *args])
    assert e.value.code == 0
    # the one scheduler opened by the command is what both analyses of run_demo get
    assert seen["word"] == word and seen["scheduler"] == ("engine", word)
