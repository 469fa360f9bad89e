"""Tests for the petbind command line: errors without traceback, petbind validate."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from petbind import __version__
from petbind.cli import main

_FIXTURES = Path(__file__).resolve().parent / "data" / "make_fixtures.py"


def _fx():
    name = "petbind_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _FIXTURES)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_version_prints_the_package_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_validate_clean_dataset_exits_0(tmp_path, capsys):
    _fx().make_bids_dataset(tmp_path)
    code, out, _ = _run(["validate", str(tmp_path)], capsys)
    assert code == 0
    assert "0 error(s), 0 warning(s)" in out


def test_validate_broken_dataset_exits_1_listing_file_and_field(tmp_path, capsys):
    ds = _fx().make_bids_dataset(tmp_path)
    side_p = ds["pet"].with_name("sub-01_ses-baseline_trc-DASB_pet.json")
    side = json.loads(side_p.read_text())
    side["TracerRadionuclide"] = "Xe-133"
    side["ImageDecayCorrected"] = False
    side_p.write_text(json.dumps(side))
    code, out, _ = _run(["validate", "--no-data", str(tmp_path)], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "severity\tfile\tfield\tmessage\tfix"  # piped: tab-separated
    sev, file, field, message, fix = lines[1].split("\t")
    assert (sev, field) == ("error", "TracerRadionuclide")
    assert file == "sub-01/ses-baseline/pet/sub-01_ses-baseline_trc-DASB_pet.json"
    assert "Xe-133" in message and "11C" in fix
    assert lines[-1] == "1 error(s), 0 warning(s)"


def test_validate_one_file(tmp_path, capsys):
    ds = _fx().make_bids_dataset(tmp_path)
    code, _, _ = _run(["validate", str(ds["tacs"])], capsys)
    assert code == 0


def test_petbind_error_prints_one_line_without_traceback_and_exits_2(tmp_path, capsys):
    code, out, err = _run(["validate", str(tmp_path / "missing")], capsys)
    assert code == 2
    assert "Traceback" not in err + out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) <= 2
    assert lines[0].startswith("error:") and "missing" in lines[0] and "fix:" in err


def test_debug_flag_shows_the_exception(tmp_path):
    from petbind.errors import FileFormatError

    with pytest.raises(FileFormatError):
        main(["--debug", "validate", str(tmp_path / "missing")])


def test_python_dash_m_petbind_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "petbind", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0
    assert "validate" in r.stdout


@pytest.mark.parametrize("as_program", [True, False])
def test_only_the_program_skips_the_collection_at_exit(as_program):
    # main() without argv is the program (the process ends after it): its exit is spared
    # a garbage collection of every object (0.1-0.17 s, issue 18); a caller passing argv
    # (tests, a library) keeps its collector
    import os

    src = str(Path(__import__("petbind").__file__).resolve().parents[1])
    call = "main()" if as_program else "main(['--version'])"
    code = ("import gc, sys\nfrom petbind.cli import main\nsys.argv = ['petbind', '--version']\n"
            f"t0 = gc.get_threshold()\ntry:\n    {call}\nexcept SystemExit:\n    pass\n"
            "print(gc.isenabled(), gc.get_freeze_count() > 0, gc.get_threshold() == t0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": src}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"petbind {__version__}" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == ("False True False" if as_program
                                                    else "True False True")


def _invoke(app, args):
    from typer.testing import CliRunner

    done = CliRunner().invoke(app, args, prog_name="petbind")
    return done.exit_code, done.output


@pytest.mark.parametrize("command", sorted(__import__("petbind.commands",
                                                      fromlist=["_MODULES"])._MODULES))
def test_a_command_alone_has_the_same_help_and_errors_as_in_the_whole_app(command):
    # main() runs `petbind COMMAND ...` on an app holding that command only (typer
    # builds every registered command at each start); the user must see no difference
    from petbind import cli

    one = cli._app_for([command, "--help"])
    assert one is not cli.app
    for args in ([command, "--help"], [command, "--no-such-option"], ["--debug", command,
                                                                      "--help"]):
        assert _invoke(one, args) == _invoke(cli.app, args)
    assert cli._app_for(["--help"]) is cli.app and cli._app_for([]) is cli.app
    assert cli._app_for(["no-such-command"]) is cli.app
