"""Expected OS and library failures end as one line and exit 2, never a traceback (issue 17).

Each case is one that gave a traceback before: the command is run in-process
through ``petbind.cli.main`` and must exit 2 with the file, field and fix
named on stderr.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from petbind.cli import main
from petbind.errors import PetbindError
from petbind.failures import as_petbind_error

matplotlib.use("Agg")
DURS = [10.0] * 6 + [60.0] * 4 + [300.0] * 5
STARTS = np.concatenate([[0.0], np.cumsum(DURS)[:-1]])


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _tacs(folder: Path, side: dict | None = None, **cols) -> Path:
    t = np.asarray(STARTS) / 60.0 + 0.5
    data = {"frame_start": STARTS, "frame_end": STARTS + np.array(DURS),
            "cerebellum": np.exp(-0.05 * t) * 10, "putamen": np.exp(-0.03 * t) * 12, **cols}
    p = folder / "sub-01_tacs.tsv"
    pd.DataFrame(data).to_csv(p, sep="\t", index=False)
    p.with_suffix(".json").write_text(json.dumps(side or {"Units": "kBq/mL"}))
    return p


@pytest.mark.parametrize("code,word", [(errno.EACCES, "permission denied"),
                                       (errno.ENOSPC, "no space left"),
                                       (errno.EROFS, "read-only"),
                                       (errno.ENOTDIR, "not a folder")])
def test_write_failures_of_fit_are_one_line(tmp_path, monkeypatch, capsys, code, word):
    tacs = _tacs(tmp_path)
    out = tmp_path / "res" / "fits.tsv"

    def refuse(*a, **k):
        raise OSError(code, "os says no", str(out.parent))

    monkeypatch.setattr("petbind.io.atomic.tempfile.mkstemp", refuse)
    assert _run(["fit", str(tacs), "--model", "suvr", "--ref", "cerebellum",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert word in err and str(out.parent) in err and "fix:" in err
    assert "Traceback" not in err


def test_bug_keeps_its_traceback():
    assert as_petbind_error(KeyError("x")) is None
    assert isinstance(as_petbind_error(OSError(errno.ENOSPC, "full")), PetbindError)


def test_non_utf8_and_deeply_nested_toml_are_config_errors(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[dataset]\natlas = "d\xe9riv\xe9s"\n'.encode("latin-1"))
    assert _run(["run", str(tmp_path), "--config", str(bad)]) == 2
    assert "UTF-8" in capsys.readouterr().err
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert _run(["run", str(tmp_path), "--config", str(deep)]) == 2
    assert "deep" in capsys.readouterr().err


def test_deeply_nested_json_sidecar_is_a_file_format_error(tmp_path, capsys):
    tacs = _tacs(tmp_path)
    tacs.with_suffix(".json").write_text('{"Units": "kBq/mL", "x": ' + "[" * 100000
                                         + "]" * 100000 + "}")
    assert _run(["fit", str(tacs), "--model", "suvr", "--ref", "cerebellum"]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and tacs.with_suffix(".json").name in err


def test_unknown_model_settings_key_names_the_key(tmp_path):
    from petbind.errors import ConfigError
    from petbind.study.config import load_config

    cfg = tmp_path / "s.toml"
    cfg.write_text('[tracers.DASB]\nreference_region = "cerebellum"\nmodels = ["srtm"]\n'
                   '[tracers.DASB.model_settings.srtm]\nbogus = 1\n'
                   '[[contrasts]]\nexpr = "b - a"\n'
                   '[statistics]\nbaseline_condition = "a"\n')
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert e.value.field == "tracers.DASB.model_settings.srtm.bogus"
    assert "r1_bounds" in e.value.fix


def test_huge_reference_value_and_all_zero_blood_are_named(tmp_path, capsys):
    from petbind.io.blood import BloodRecording, write_blood

    ref = np.exp(-0.05 * (np.asarray(STARTS) / 60.0 + 0.5)) * 10
    ref[3] = 1e308
    tacs = _tacs(tmp_path, cerebellum=ref)
    for extra in ([], ["--k2prime", "0.1"], ["--k2prime", "auto"]):
        assert _run(["fit", str(tacs), "--model", "srtm2" if extra else "srtm", "--ref",
                     "cerebellum", *extra]) == 2
        err = capsys.readouterr().err
        assert "cerebellum" in err and "plausible" in err and "Traceback" not in err
    good = _tacs(tmp_path)
    blood = tmp_path / "sub-01_recording-manual_blood.tsv"
    t = np.arange(0.0, 60.0, 0.5)
    write_blood(blood, BloodRecording("manual", t, {"plasma_radioactivity": 0 * t,
                                                    "whole_blood_radioactivity": 0 * t}, {}))
    assert _run(["fit", str(good), "--model", "1tcm", "--blood", str(blood)]) == 2
    assert "every value is 0" in capsys.readouterr().err


def test_simulate_with_a_billion_subjects_is_refused_at_once(tmp_path, capsys):
    assert _run(["simulate", "--subjects", "1000000000", "--out", str(tmp_path / "s")]) == 2
    assert "at most 10000" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_existing_file_as_output_folder(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("")
    assert _run(["simulate", "--out", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    from petbind.study.outdir import lock_output

    with pytest.raises(PetbindError) as e, lock_output(f):
        pass
    assert e.value.field == "--out"


def test_unreachable_or_malformed_scheduler_is_named():
    from petbind.study.pipeline import run_scans

    with pytest.raises(PetbindError) as e:
        run_scans([], None, Path("."), scheduler="foo:bar", progress=False)
    assert e.value.field == "--scheduler"


def test_rgb_image_in_parametric_is_refused(tmp_path, capsys):
    import nibabel as nib

    sys.path.insert(0, str(Path(__file__).resolve().parent / "io"))
    rgb = np.zeros((4, 4, 3, len(DURS)), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    p = tmp_path / "sub-01_pet.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(p))
    p.with_name("sub-01_pet.json").write_text(json.dumps({
        "FrameTimesStart": list(STARTS), "FrameDuration": DURS, "Units": "kBq/mL",
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0, "InjectionStart": 0,
        "TracerRadionuclide": "C11"}))
    mask = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), str(mask))
    assert _run(["parametric", str(p), "--model", "suvr", "--ref-mask", str(mask),
                 "--out", str(tmp_path / "maps")]) == 2
    err = capsys.readouterr().err
    assert "RGB" in err and "datatype" in err


def test_region_names_with_dollars_render_literally_in_report_figures():
    import matplotlib.pyplot as plt

    from petbind.report.figures import figure_to_data_uri

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a$\\frac$b")
    ax.set_title("cortex $x$ and $\\bad{")
    ax.legend()
    assert figure_to_data_uri(fig).startswith("data:image/png;base64,")


def test_pet_name_without_sub_is_named(tmp_path):
    from petbind.errors import MetadataError
    from petbind.study.config import parse_config
    from petbind.study.discover import discover_scans

    bids = tmp_path / "bids"
    pet = bids / "sub-01" / "ses-a" / "pet" / "ses-a_trc-X_pet.nii.gz"
    pet.parent.mkdir(parents=True)
    pet.write_bytes(b"")
    (bids / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9"}')
    atlas = bids / "derivatives" / "atlas" / "sub-01" / "ses-a" / "pet" / "ses-a_trc-X_dseg.nii.gz"
    atlas.parent.mkdir(parents=True)
    atlas.write_bytes(b"")
    cfg = parse_config({"dataset": {"atlas": "derivatives/atlas"},
                        "tracers": {"X": {"reference_region": "cerebellum",
                                          "models": ["srtm"]}},
                        "contrasts": [{"expr": "b - a"}],
                        "statistics": {"baseline_condition": "a"}}, base_dir=bids)
    with pytest.raises(MetadataError) as e:  # was KeyError: 'sub'
        discover_scans(bids, cfg)
    assert e.value.field == "sub" and pet.name in str(e.value)


def test_parametric_with_a_malformed_scheduler_address_is_named(tmp_path, capsys):
    import nibabel as nib

    t = (np.asarray(STARTS) + np.asarray(DURS) / 2) / 60.0
    data = np.broadcast_to(10 * np.exp(-0.05 * t), (4, 4, 3, len(DURS))).astype(np.float32)
    p = tmp_path / "sub-01_pet.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)), str(p))
    p.with_name("sub-01_pet.json").write_text(json.dumps({
        "FrameTimesStart": list(STARTS), "FrameDuration": DURS, "Units": "kBq/mL",
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0, "InjectionStart": 0,
        "TracerRadionuclide": "C11"}))
    mask = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), str(mask))
    assert _run(["parametric", str(p), "--model", "suvr", "--ref-mask", str(mask),
                 "--out", str(tmp_path / "maps"), "--scheduler", "foo:bar"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler" in err and "foo:bar" in err and "Traceback" not in err


def _valid_pet(tmp_path):
    import nibabel as nib

    t = (np.asarray(STARTS) + np.asarray(DURS) / 2) / 60.0
    data = np.broadcast_to(10 * np.exp(-0.05 * t), (4, 4, 3, len(DURS))).astype(np.float32)
    p = tmp_path / "in" / "sub-01_pet.nii.gz"
    p.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)), str(p))
    p.with_name("sub-01_pet.json").write_text(json.dumps({
        "FrameTimesStart": list(STARTS), "FrameDuration": DURS, "Units": "kBq/mL",
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": 0, "InjectionStart": 0,
        "TracerRadionuclide": "C11"}))
    mask = tmp_path / "in" / "ref.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), str(mask))
    return p, mask


@pytest.mark.parametrize("command", ["simulate", "parametric"])
def test_disk_full_on_other_commands_is_one_line(tmp_path, monkeypatch, capsys, command):
    out = tmp_path / "out"
    args = {"simulate": ["simulate", "--subjects", "1", "--out", str(out)]}
    if command == "parametric":
        p, mask = _valid_pet(tmp_path)
        args["parametric"] = ["parametric", str(p), "--model", "suvr", "--ref-mask",
                              str(mask), "--out", str(out), "--scheduler", "sync"]

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr("petbind.io.atomic.tempfile.mkstemp", full)
    assert _run(args[command]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and str(out) in err and "Traceback" not in err


def test_disk_full_during_write_names_the_output(tmp_path, monkeypatch, capsys):
    tacs = _tacs(tmp_path)
    out = tmp_path / "fits.tsv"
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith(".fits.tsv."):
            raise OSError(errno.ENOSPC, "No space left on device")  # no file name, as write()
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    assert _run(["fit", str(tacs), "--model", "suvr", "--ref", "cerebellum",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and str(out) in err
    assert not out.exists() and not list(tmp_path.glob(".fits.tsv.*"))
