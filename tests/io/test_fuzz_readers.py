"""Readers never leak a foreign exception: bounded random mutation fuzzing (issue 17).

Each reader gets a valid file, then a seeded stream of mutants (bytes
flipped, truncated, duplicated, inserted, text cells and lines changed). A
mutant must either read (and, for images, yield its data) or raise a
``PetbindError``; any other exception type fails the test and names the seed
and mutant to replay. Bounded: at most ``N`` mutants and ``BUDGET_S`` seconds
per reader, so the suite stays fast.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pytest

from petbind.errors import PetbindError
from petbind.io.bids import load_pet
from petbind.io.blood import BloodRecording, read_blood, write_blood
from petbind.io.dicom import load_dicom
from petbind.io.ecat import load_ecat
from petbind.io.tables import read_json, read_tacs, write_tacs
from petbind.tac import TACTable
from petbind.timing import FrameTiming

# libraries warn about the damaged files they are fed; that is expected here
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

N = 120
BUDGET_S = 4.0
SEED = 20261203


def _mutate(data: bytes, rng: random.Random, text: bool) -> bytes:
    b = bytearray(data)
    op = rng.randrange(7 if text else 5)
    if op == 0 or not b:  # flip a few bytes
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        b = b[: rng.randrange(len(b))]
    elif op == 2:  # duplicate a chunk
        i = rng.randrange(len(b))
        b[i:i] = b[i:i + rng.randint(1, 64)]
    elif op == 3:  # insert random bytes
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op == 4:  # overwrite a run with one byte value (0x00, 0xff, a digit ...)
        i = rng.randrange(len(b))
        b[i:i + rng.randint(1, 32)] = bytes([rng.choice([0, 0xFF, 0x30, 0x7F])]) * 4
    elif op == 5:  # text: replace a random character with a structural one
        i = rng.randrange(len(b))
        b[i] = ord(rng.choice(["\t", "\n", ".", "-", "e", "9", "[", "{", '"', ",", " ", "n"]))
    else:  # text: replace a cell by an extreme value
        s = b.decode("utf-8", "replace").split("\t")
        k = rng.randrange(len(s))
        s[k] = rng.choice(["1e308", "-1e308", "nan", "inf", "", "n/a", "0", "-0", "1e-320",
                           "99999999999999999999", "x"])
        b = bytearray("\t".join(s).encode())
    return bytes(b)


def _fuzz(target: Path, call: Callable[[], object], *, text: bool, seed: int = SEED) -> int:
    """Run mutants of ``target`` through ``call``; return how many ran."""
    original = target.read_bytes()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    n = 0
    try:
        while n < N and time.perf_counter() - t0 < BUDGET_S:
            target.write_bytes(_mutate(original, rng, text))
            n += 1
            try:
                call()
            except PetbindError:
                pass
            except Exception:  # the failure this test looks for
                pytest.fail(f"{target.name}, seed {seed}, mutant {n}: foreign exception\n"
                            + traceback.format_exc(limit=-3))
    finally:
        target.write_bytes(original)
    return n


def _fixtures():
    path = Path(__file__).resolve().parents[1] / "data" / "make_fixtures.py"
    name = "petbind_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


STARTS = [0.0, 60.0, 120.0, 180.0]
DURS = [60.0] * 4


def _pet(tmp: Path, ext: str) -> Path:
    fx = _fixtures()
    data = np.random.default_rng(0).uniform(1, 2, fx.SHAPE + (4,))
    return fx.write_pet(tmp / f"sub-01_pet{ext}", data, fx.pet_sidecar(STARTS, DURS))


def _read_image(p: Path) -> None:
    img = load_pet(p)
    img.voxel_curves(np.ones(img.spatial_shape, bool))


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_fuzz_nifti_image(tmp_path, ext):
    p = _pet(tmp_path, ext)
    assert _fuzz(p, lambda: _read_image(p), text=False) >= 20


def test_fuzz_pet_json_sidecar(tmp_path):
    p = _pet(tmp_path, ".nii.gz")
    assert _fuzz(p.with_name("sub-01_pet.json"), lambda: load_pet(p), text=True) >= 20


def test_fuzz_json_reader(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"Units": "kBq/mL", "a": [1, 2.5, {"b": None}], "c": "text"}))
    assert _fuzz(p, lambda: read_json(p), text=True) >= 20


def test_fuzz_ecat(tmp_path):
    src = Path(nibabel.__file__).parent / "tests" / "data" / "tinypet.v"
    p = tmp_path / "tinypet.v"
    p.write_bytes(src.read_bytes())

    def call():
        load_ecat(p).get_data()

    assert _fuzz(p, call, text=False) >= 10


def test_fuzz_dicom(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_dicom import DURS as DDURS
    from test_dicom import STARTS as DSTARTS
    from test_dicom import _counts, write_series

    folder = write_series(tmp_path / "dcm", _counts(), DSTARTS, DDURS)
    files = sorted(folder.iterdir())
    n = 0
    for k, f in enumerate((files[0], files[len(files) // 2])):
        n += _fuzz(f, lambda: load_dicom(folder).get_data(), text=False, seed=SEED + k)
    assert n >= 10


def _table(tmp: Path, name: str) -> Path:
    timing = FrameTiming.from_seconds(STARTS, DURS)
    t = TACTable(timing, np.array([[1.0, 2.0, 3.0, 2.5], [0.5, 1.5, 1.0, 0.8]]),
                 ["cortex", "cerebellum"], "kBq/mL", {"TracerRadionuclide": "C11"})
    return write_tacs(tmp / name, t)


@pytest.mark.parametrize("name", ["x_tacs.tsv", "x.tac", "x.dft"])
def test_fuzz_tac_tables(tmp_path, name):
    p = _table(tmp_path, name)
    assert _fuzz(p, lambda: read_tacs(p), text=True) >= 20
    if name.endswith(".tsv"):  # and its sidecar
        assert _fuzz(p.with_suffix(".json"), lambda: read_tacs(p), text=True) >= 20


def test_fuzz_blood(tmp_path):
    t = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0])
    rec = BloodRecording("manual", t, {"whole_blood_radioactivity": 10 * np.exp(-0.1 * t),
                                       "plasma_radioactivity": 12 * np.exp(-0.1 * t),
                                       "metabolite_parent_fraction": np.exp(-0.02 * t)}, {})
    p = write_blood(tmp_path / "sub-01_recording-manual_blood.tsv", rec)
    assert _fuzz(p, lambda: read_blood(p), text=True) >= 20
    assert _fuzz(p.with_name("sub-01_recording-manual_blood.json"), lambda: read_blood(p),
                 text=True) >= 20
