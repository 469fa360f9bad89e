"""Every reader refuses malformed input with the specific error and writes nothing.

Each case builds one broken input in a fresh folder, calls the reader, and
asserts the exception class, the field it names, that the message names the
file, and that no file in the folder appeared or changed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from petbind.errors import (
    DataError,
    DecayError,
    FileFormatError,
    IsotopeError,
    MetadataError,
    PetbindError,
    TimingError,
    UnitsError,
)
from petbind.io.bids import load_pet
from petbind.io.blood import read_blood
from petbind.io.tables import read_tacs

N = 5
DURS = [60.0] * N
STARTS = [0.0, 60.0, 120.0, 180.0, 240.0]


def _pet(tmp: Path, fx, data=None, **side):
    """A valid 5-frame PET + sidecar with overrides; returns the image path."""
    sidecar = fx.pet_sidecar(STARTS, DURS, **side)
    arr = np.ones(fx.SHAPE + (N,)) if data is None else data
    return fx.write_pet(tmp / "sub-01_pet.nii.gz", arr, sidecar)


def _pet_raw_json(tmp: Path, fx, text: str):
    p = fx.write_pet(tmp / "sub-01_pet.nii.gz", np.ones(fx.SHAPE + (N,)), None)
    (tmp / "sub-01_pet.json").write_text(text)
    return p


def _load(p):
    return load_pet(p)


def _voxels(p):
    img = load_pet(p)
    return img.voxel_curves(np.ones(img.spatial_shape, bool))


def _regions(p):
    img = load_pet(p)
    return img.region_means(np.ones(img.spatial_shape, int))


def _truncate(p: Path, keep: float) -> Path:
    b = p.read_bytes()
    p.write_bytes(b[: int(len(b) * keep)])
    return p


def _tsv(tmp: Path, text: str, side: dict | None = {"Units": "kBq/mL"}, name="x_tacs.tsv"):  # noqa: B006
    p = tmp / name
    p.write_text(text)
    if side is not None:
        p.with_suffix(".json").write_text(json.dumps(side))
    return p


GOOD_TSV = "frame_start\tframe_end\tputamen\n0\t60\t1.5\n60\t120\t2.5\n"


def _blood(tmp: Path, text: str, side: dict):
    p = tmp / "sub-01_recording-manual_blood.tsv"
    p.write_text(text)
    (tmp / "sub-01_recording-manual_blood.json").write_text(json.dumps(side))
    return p


BLOOD_SIDE = {"time": {"Units": "s"}, "whole_blood_radioactivity": {"Units": "kBq/mL"},
              "metabolite_parent_fraction": {"Units": "unitless"}}


def _noise(fx):
    return np.random.default_rng(0).uniform(1, 2, fx.SHAPE + (N,))


def _smooth(fx):
    """Compressible data (Huffman-coded deflate blocks), large enough that the
    header is read before the corrupt part."""
    rng = np.random.default_rng(1)
    return np.round(rng.uniform(0, 4, (40, 40, 20, N)), 0)


def _corrupt_middle(p: Path) -> Path:
    """Flip bytes late in the deflate stream; header and gzip trailer intact."""
    b = bytearray(p.read_bytes())
    mid = int(len(b) * 0.8)
    b[mid:mid + 64] = bytes(x ^ 0xFF for x in b[mid:mid + 64])
    p.write_bytes(bytes(b))
    return p


def _not_image(tmp: Path, fx) -> Path:
    p = _pet(tmp, fx)
    p.write_bytes(gzip.compress(b"this is not a NIfTI file"))
    return p


def _nan_image(fx, value):
    data = np.ones(fx.SHAPE + (N,))
    data[1, 2, 3, 4] = value
    return data


# (id, builder(tmp, fx) -> path, reader, error class, field)
CASES = [
    ("missing FrameDuration", lambda t, fx: _pet(t, fx, FrameDuration=None), _load,
     TimingError, "FrameDuration"),
    ("missing FrameTimesStart", lambda t, fx: _pet(t, fx, FrameTimesStart=None), _load,
     TimingError, "FrameTimesStart"),
    ("frames differ from 4th dimension",
     lambda t, fx: _pet(t, fx, FrameTimesStart=STARTS[:4], FrameDuration=DURS[:4]), _load,
     TimingError, "FrameDuration"),
    ("start and duration lengths differ", lambda t, fx: _pet(t, fx, FrameDuration=DURS[:4]),
     _load, TimingError, "FrameDuration"),
    ("zero duration", lambda t, fx: _pet(t, fx, FrameDuration=[60, 60, 0, 60, 60]), _load,
     TimingError, "FrameDuration"),
    ("negative duration", lambda t, fx: _pet(t, fx, FrameDuration=[60, -60, 60, 60, 60]),
     _load, TimingError, "FrameDuration"),
    ("overlapping frames", lambda t, fx: _pet(t, fx, FrameDuration=[60, 90, 60, 60, 60]),
     _load, TimingError, "FrameDuration"),
    ("decreasing starts", lambda t, fx: _pet(t, fx, FrameTimesStart=[0, 60, 180, 120, 240]),
     _load, TimingError, "FrameTimesStart"),
    ("NaN frame time", lambda t, fx: _pet_raw_json(t, fx, json.dumps(
        fx.pet_sidecar(STARTS, DURS)).replace('"FrameDuration": [60.0', '"FrameDuration": [NaN')),
     _load, TimingError, "FrameDuration"),
    ("frame times as strings",
     lambda t, fx: _pet(t, fx, FrameDuration=["60", "60", "60", "60", "60"]), _load,
     TimingError, "FrameTimesStart"),
    ("frames before injection", lambda t, fx: _pet(t, fx, InjectionStart=30), _load,
     TimingError, "InjectionStart"),
    ("missing InjectionStart", lambda t, fx: _pet(t, fx, InjectionStart=None), _load,
     MetadataError, "InjectionStart"),
    ("decay flag false but factors not 1",
     lambda t, fx: _pet(t, fx, ImageDecayCorrected=False,
                        DecayCorrectionFactor=[1.0, 1.03, 1.07, 1.1, 1.14]), _load,
     DecayError, "ImageDecayCorrected"),
    ("decay flag true but factors all 1",
     lambda t, fx: _pet(t, fx, DecayCorrectionFactor=[1.0] * N), _load,
     DecayError, "ImageDecayCorrected"),
    ("decay flag as a string", lambda t, fx: _pet(t, fx, ImageDecayCorrected="true"), _load,
     DecayError, "ImageDecayCorrected"),
    ("corrected without correction time",
     lambda t, fx: _pet(t, fx, ImageDecayCorrectionTime=None), _load,
     DecayError, "ImageDecayCorrectionTime"),
    ("correction time null", lambda t, fx: _pet_raw_json(t, fx, json.dumps(
        {**fx.pet_sidecar(STARTS, DURS), "ImageDecayCorrectionTime": None})), _load,
     DecayError, "ImageDecayCorrectionTime"),
    ("unknown radionuclide", lambda t, fx: _pet(t, fx, TracerRadionuclide="Xx99"), _load,
     IsotopeError, "TracerRadionuclide"),
    ("unknown units", lambda t, fx: _pet(t, fx, Units="Bq/furlong"), _load,
     UnitsError, "Units"),
    ("SUV units", lambda t, fx: _pet(t, fx, Units="SUV"), _load, UnitsError, "Units"),
    ("missing units", lambda t, fx: _pet(t, fx, Units=None), _load, UnitsError, "Units"),
    ("malformed TimeZero", lambda t, fx: _pet(t, fx, TimeZero="10h00"), _load,
     MetadataError, "TimeZero"),
    ("JSON syntax error", lambda t, fx: _pet_raw_json(t, fx, '{"Units": "kBq/mL",}'), _load,
     FileFormatError, None),
    ("JSON not an object", lambda t, fx: _pet_raw_json(t, fx, "[1, 2]"), _load,
     FileFormatError, None),
    ("missing sidecar", lambda t, fx: fx.write_pet(t / "sub-01_pet.nii.gz",
                                                   np.ones(fx.SHAPE + (N,)), None), _load,
     MetadataError, None),
    ("truncated .nii.gz data", lambda t, fx: _truncate(_pet(t, fx, data=_noise(fx)), 0.9),
     _load, FileFormatError, None),
    ("truncated .nii.gz header", lambda t, fx: _truncate(_pet(t, fx, data=_noise(fx)), 0.05),
     _load, FileFormatError, None),
    ("truncated .nii", lambda t, fx: _truncate(
        fx.write_pet(t / "sub-01_pet.nii", np.ones(fx.SHAPE + (N,)),
                     fx.pet_sidecar(STARTS, DURS)), 0.7), _load, FileFormatError, None),
    ("not an image", lambda t, fx: _not_image(t, fx), _load, FileFormatError, None),
    ("corrupt compressed voxel data", lambda t, fx: _corrupt_middle(_pet(t, fx, data=_smooth(fx))),
     _voxels, FileFormatError, "data"),
    ("NaN voxel", lambda t, fx: _pet(t, fx, data=_nan_image(fx, np.nan)), _voxels,
     DataError, "data"),
    ("inf voxel", lambda t, fx: _pet(t, fx, data=_nan_image(fx, np.inf)), _regions,
     DataError, "data"),
    ("TSV non-numeric cell", lambda t, fx: _tsv(t, GOOD_TSV.replace("2.5", "2,5")), read_tacs,
     DataError, "putamen"),
    ("TSV non-numeric time", lambda t, fx: _tsv(t, GOOD_TSV.replace("\t120\t", "\t2min\t")),
     read_tacs, TimingError, "frame_end"),
    ("TSV without frame_end", lambda t, fx: _tsv(
        t, "frame_start\tputamen\n0\t1.5\n60\t2.5\n"), read_tacs, TimingError, "frame_end"),
    ("TSV ragged row", lambda t, fx: _tsv(t, GOOD_TSV + "120\t180\t3\t4\n"), read_tacs,
     FileFormatError, None),
    ("TSV empty", lambda t, fx: _tsv(t, ""), read_tacs, FileFormatError, None),
    ("TSV unknown units", lambda t, fx: _tsv(t, GOOD_TSV, {"Units": "kBq/pint"}), read_tacs,
     UnitsError, "Units"),
    ("TSV no units anywhere", lambda t, fx: _tsv(t, GOOD_TSV, None), read_tacs,
     MetadataError, "Units"),
    ("TSV overlapping frames", lambda t, fx: _tsv(
        t, "frame_start\tframe_end\tputamen\n0\t90\t1.5\n60\t120\t2.5\n"), read_tacs,
     TimingError, "frame_end"),
    ("PMOD header without units", lambda t, fx: _tsv(
        t, "start\tend\tputamen\n0\t60\t1\n", None, "x.tac"), read_tacs,
     FileFormatError, "header"),
    ("PMOD unknown time unit", lambda t, fx: _tsv(
        t, "start[fortnights]\tend[kBq/cc]\tputamen\n0\t60\t1\n", None, "x.tac"), read_tacs,
     UnitsError, "start[fortnights]"),
    ("DFT mid times only", lambda t, fx: _tsv(
        t, "DFT1\tputamen\nstudy\t.\nkBq/cc\t.\nTime (min)\t.\n0.5\t1.0\n", None, "x.dft"),
     read_tacs, TimingError, "Time"),
    ("DFT short data line", lambda t, fx: _tsv(
        t, "DFT1\tputamen\nstudy\t.\nkBq/cc\t.\nTimes (min)\t.\n0\t1\n", None, "x.dft"),
     read_tacs, FileFormatError, None),
    ("blood parent fraction in percent", lambda t, fx: _blood(
        t, "time\twhole_blood_radioactivity\tmetabolite_parent_fraction\n0\t1\t100\n60\t2\t80\n",
        BLOOD_SIDE), read_blood, DataError, "metabolite_parent_fraction"),
    ("blood time without units", lambda t, fx: _blood(
        t, "time\twhole_blood_radioactivity\n0\t1\n60\t2\n",
        {"whole_blood_radioactivity": {"Units": "kBq/mL"}}), read_blood,
     MetadataError, "time.Units"),
    ("blood times decrease", lambda t, fx: _blood(
        t, "time\twhole_blood_radioactivity\n60\t1\n0\t2\n", BLOOD_SIDE), read_blood,
     TimingError, "time"),
    ("blood unknown activity unit", lambda t, fx: _blood(
        t, "time\twhole_blood_radioactivity\n0\t1\n60\t2\n",
        {**BLOOD_SIDE, "whole_blood_radioactivity": {"Units": "counts"}}), read_blood,
     UnitsError, "whole_blood_radioactivity.Units"),
]


@pytest.mark.parametrize(("build", "reader", "error", "field"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_is_refused_with_specific_error_and_nothing_written(
        tmp_path, fx, untouched, build, reader, error, field):
    path = build(tmp_path, fx)
    with untouched(tmp_path), pytest.raises(error) as exc:
        reader(path)
    err = exc.value
    assert isinstance(err, PetbindError)
    if field is not None:
        assert err.field == field, str(err)
    assert err.path is not None and Path(err.path).parent == tmp_path
    assert err.fix, "every refusal says how to fix it"


def test_at_least_25_distinct_malformed_inputs_are_covered():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25
