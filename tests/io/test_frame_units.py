"""Frame times written in minutes are refused by every reader and by validate (issue 17).

The schedule below is a typical 90-min [11C] scan (Wu & Carson 2002 style:
6 x 10 s, 3 x 20 s, 2 x 30 s, 2 x 60 s, 10 x 300 s... rounded) written in
minutes, as a spreadsheet export would give it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.errors import TimingError
from petbind.io.bids import load_pet
from petbind.io.tables import read_tacs, timing_from_frame_table
from petbind.io.validate import validate_path
from petbind.timing import frames_look_like_minutes

SCHEDULE_S = [10.0] * 6 + [20.0] * 3 + [30.0] * 2 + [60.0] * 2 + [120.0] * 5 + [300.0] * 14
STARTS_S = np.concatenate([[0.0], np.cumsum(SCHEDULE_S)[:-1]]).tolist()
DURS_MIN = [d / 60.0 for d in SCHEDULE_S]
STARTS_MIN = [s / 60.0 for s in STARTS_S]


def test_minutes_schedule_is_an_error_and_real_short_schedules_pass():
    assert frames_look_like_minutes(STARTS_MIN, DURS_MIN)[0] == "error"
    assert frames_look_like_minutes(STARTS_S, SCHEDULE_S, half_life_s=1220.0) is None
    # a real short schedule: 6 x 10 s, with or without the half-life
    six = [10.0] * 6
    assert frames_look_like_minutes(np.arange(6) * 10.0, six) is None
    assert frames_look_like_minutes(np.arange(6) * 10.0, six, half_life_s=1220.0) is None
    # [15O]water: 12 x 5 s, 6 x 10 s, 8 x 15 s (240 s, two half-lives)
    water = [5.0] * 12 + [10.0] * 6 + [15.0] * 8
    ws = np.concatenate([[0.0], np.cumsum(water)[:-1]])
    assert frames_look_like_minutes(ws, water, half_life_s=122.24) is None
    # a minutes schedule without sub-second frames: 22 frames over 70 "s" -> warning
    m = [1.0] * 10 + [5.0] * 12
    ms = np.concatenate([[0.0], np.cumsum(m)[:-1]])
    assert frames_look_like_minutes(ms, m, half_life_s=1220.0)[0] == "warning"


def test_load_pet_and_validate_refuse_a_sidecar_in_minutes(tmp_path, fx):
    n = len(DURS_MIN)
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (n,)),
                     fx.pet_sidecar(STARTS_MIN, DURS_MIN))
    with pytest.raises(TimingError) as exc:
        load_pet(p)
    assert exc.value.field == "FrameDuration" and "minutes" in exc.value.message
    assert "seconds" in exc.value.fix
    errors = [q for q in validate_path(p) if q.severity == "error"]
    assert any(q.field == "FrameDuration" and "minutes" in q.message for q in errors)


def test_real_short_schedule_loads(tmp_path, fx):
    p = fx.write_pet(tmp_path / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (6,)),
                     fx.pet_sidecar(list(np.arange(6) * 10.0), [10.0] * 6))
    assert load_pet(p).timing.n_frames == 6
    assert not [q for q in validate_path(p) if q.field == "FrameDuration"]


def _table(path, starts, durs):
    rows = ["frame_start\tframe_end\tcortex"]
    rows += [f"{s:.6g}\t{s + d:.6g}\t1.0" for s, d in zip(starts, durs, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL"}))
    return path


def test_tac_table_and_frame_table_in_minutes_are_refused(tmp_path):
    p = _table(tmp_path / "x_tacs.tsv", STARTS_MIN, DURS_MIN)
    with pytest.raises(TimingError) as exc:
        read_tacs(p)
    assert str(p) in str(exc.value) and "minutes" in exc.value.message
    assert any(q.severity == "error" and "minutes" in q.message for q in validate_path(p))
    f = _table(tmp_path / "frames.tsv", STARTS_MIN, DURS_MIN)
    with pytest.raises(TimingError):
        timing_from_frame_table(f)
    ok = _table(tmp_path / "y_tacs.tsv", STARTS_S, SCHEDULE_S)
    assert read_tacs(ok).timing.n_frames == len(SCHEDULE_S)
