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

