"""``petbind simulate``: writes a dataset, prints the default config, errors exit 2."""

from __future__ import annotations

import tomllib

import pytest

from petbind.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_print_config_shows_the_default_as_valid_toml(capsys):
    code, out, _ = run(["simulate", "--print-config"], capsys)
    assert code in (0, None)
    cfg = tomllib.loads(out)
    assert cfg["conditions"] == ["baseline", "ketamine", "ketaminenbqx"]
    assert set(cfg["tracer"]) == {"AZ10419369", "DASB"}


def test_print_config_suggests_a_name_other_than_the_study_configs(capsys):
    _, out, _ = run(["simulate", "--print-config"], capsys)
    assert "simulate.toml" in out and "study.toml" not in out


def test_simulate_writes_the_requested_design(tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    from petbind.simulate.config import default_config_text

    cfg.write_text(default_config_text().replace("voxel_mm = 1.0", "voxel_mm = 2.0"),
                   encoding="utf-8")
    out = tmp_path / "ds"
    code, text, _ = run(["simulate", "--out", str(out), "--config", str(cfg),
                         "--subjects", "1", "--tracers", "DASB", "--conditions",
                         "baseline,ketamine", "--no-noise", "--seed", "3"], capsys)
    assert code in (0, None)
    assert "wrote 2 scans" in text
    pets = sorted(p.name for p in out.rglob("*_pet.nii.gz"))
    assert pets == ["sub-01_ses-baseline_trc-DASB_pet.nii.gz",
                    "sub-01_ses-ketamine_trc-DASB_pet.nii.gz"]
    used = tomllib.loads((out / "derivatives/petbind-sim/simulate_config.toml").read_text())
    assert used["seed"] == 3
    assert used["scanner"]["noise"] == 0.0


def test_bad_config_exits_2_naming_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    from petbind.simulate.config import default_config_text

    cfg.write_text(default_config_text().replace("VP = { bp_nd = 1.8", "VP = { bp_nd = -1.8"),
                   encoding="utf-8")
    code, _, err = run(["simulate", "--out", str(tmp_path / "x"), "--config", str(cfg)],
                       capsys)
    assert code == 2
    assert "bad.toml" in err
    assert "tracer.AZ10419369.regions.VP.bp_nd" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_unknown_tracer_and_missing_out_are_errors(tmp_path, capsys):
    code, _, err = run(["simulate", "--out", str(tmp_path / "x"), "--tracers", "PIB"], capsys)
    assert code == 2 and "tracers" in err and "PIB" in err
    code, _, err = run(["simulate"], capsys)
    assert code == 2 and "--out" in err


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_scheduler_option_writes_the_same_bytes_as_this_process(tmp_path, capsys):
    """--scheduler threads:2 simulates subjects as tasks; every file equals the sync run's."""
    args = ["--subjects", "2", "--tracers", "DASB", "--conditions", "baseline",
            "--no-noise", "--seed", "5"]
    from petbind.simulate.config import default_config_text

    cfg = tmp_path / "sim.toml"
    cfg.write_text(default_config_text().replace("voxel_mm = 1.0", "voxel_mm = 2.0"),
                   encoding="utf-8")
    trees = []
    for name, extra in (("sync", []), ("threads", ["--scheduler", "threads:2"])):
        code, text, _ = run(["simulate", "--out", str(tmp_path / name), "--config",
                             str(cfg), *args, *extra], capsys)
        assert code in (0, None) and "wrote 2 scans" in text
        trees.append(_tree_bytes(tmp_path / name))
    assert len(trees[0]) > 5
    assert trees[0] == trees[1]


def test_bad_scheduler_exits_2_before_writing(tmp_path, capsys):
    out = tmp_path / "ds"
    code, _, err = run(["simulate", "--out", str(out), "--scheduler", "bogus"], capsys)
    assert code == 2
    assert "--scheduler" in err or "scheduler" in err
    assert not out.exists()
