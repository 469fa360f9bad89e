"""Tests for petbind.io.ecat with nibabel's real ECAT7 sample (tinypet.v)."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel
import nibabel.ecat as necat
import numpy as np
import pytest

from petbind.errors import DecayError, TimingError
from petbind.io.ecat import load_ecat

TINYPET = Path(nibabel.__file__).parent / "tests" / "data" / "tinypet.v"
F18_HALF_LIFE_MIN = 109.739  # NNDC NuDat 3


def _raw_kbq(path: Path) -> np.ndarray:
    """Stored integers x subheader scale factor (Bq/cc, calibrated file) / 1000."""
    img = necat.load(str(path))
    sub = img.get_subheaders()
    raw = sub.raw_data_from_fileobj(0)
    return raw.astype(float) * float(sub.subheaders[0]["scale_factor"]) / 1000.0


def _modified(tmp: Path, *, isotope: bytes | None = None, decay: float | None = None) -> Path:
    img = necat.load(str(TINYPET))
    hdr = img.header.copy()
    if isotope is not None:
        hdr["isotope_name"] = isotope
    sub = img.get_subheaders()
    sub.subheaders = [s.copy() for s in sub.subheaders]
    if decay is not None:
        sub.subheaders[0]["decay_corr_fctr"] = decay
    out = tmp / "mod.v"
    necat.EcatImage(np.asarray(img.dataobj), img.affine, hdr, sub,
                    img.get_mlist()).to_filename(str(out))
    return out


def test_tinypet_timing_comes_from_frame_subheaders_in_ms():
    img = load_ecat(TINYPET, injection_offset_s=0.0)
    np.testing.assert_allclose(img.timing.start_s, [1500.016])
    np.testing.assert_allclose(img.timing.duration_s, [300.0])
    assert img.shape == (10, 10, 3, 1)
    assert img.metadata["isotope"] == "18F"
    assert img.metadata["TracerName"] == "FDG"


def test_tinypet_values_are_calibrated_bq_per_cc_not_multiplied_by_calibration_again():
    img = load_ecat(TINYPET, injection_offset_s=0.0)
    expected = _raw_kbq(TINYPET)[..., None]
    got = img.get_data()
    # decay corrected to scan start = injection here, so no further factor
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=1e-6)
    assert 1.0 < got.max() < 100.0  # a brain FDG scan in kBq/mL, not 2.5e8


def test_tinypet_header_decay_factor_is_the_exact_frame_integrated_factor():
    # An independent check of the closed form against the scanner's own number.
    lam = math.log(2) / F18_HALF_LIFE_MIN
    a, d = 1500.016 / 60, 300.0 / 60
    exact = lam * d * math.exp(lam * a) / (1 - math.exp(-lam * d))
    assert exact == pytest.approx(1.1895915, rel=2e-4)


def test_injection_before_scan_start_moves_decay_reference_to_injection():
    img = load_ecat(TINYPET, injection_offset_s=600.0)
    lam = math.log(2) / F18_HALF_LIFE_MIN
    np.testing.assert_allclose(img.timing.start, [1500.016 / 60 + 10.0])
    expected = _raw_kbq(TINYPET) * math.exp(lam * 10.0)
    np.testing.assert_allclose(img.get_data()[..., 0], expected, rtol=1e-6)


def test_header_injection_time_after_scan_start_is_refused():
    # tinypet's dose_start_time lies 6 days after its scan_start_time
    with pytest.raises(TimingError) as e:
        load_ecat(TINYPET)
    assert e.value.field == "dose_start_time"


def test_decay_factors_of_another_isotope_are_refused(tmp_path):
    p = _modified(tmp_path, isotope=b"C-11")
    with pytest.raises(DecayError) as e:
        load_ecat(p, injection_offset_s=0.0)
    assert e.value.field == "decay_corr_fctr"


def test_uncorrected_ecat_gets_frame_integrated_decay_correction(tmp_path):
    p = _modified(tmp_path, decay=1.0)
    img = load_ecat(p, injection_offset_s=0.0)
    lam = math.log(2) / F18_HALF_LIFE_MIN
    a, d = 1500.016 / 60, 5.0
    exact = lam * d * math.exp(lam * a) / (1 - math.exp(-lam * d))
    np.testing.assert_allclose(img.get_data()[..., 0], _raw_kbq(p) * exact, rtol=1e-6)
    assert img.metadata["ImageDecayCorrected"] is False


def test_non_ecat_file_is_refused(tmp_path):
    from petbind.errors import FileFormatError

    p = tmp_path / "x.v"
    p.write_bytes(b"\0" * 2048)
    with pytest.raises(FileFormatError):
        load_ecat(p)


def test_unknown_isotope_names_the_ecat_header_field(tmp_path):
    from petbind.errors import IsotopeError

    p = _modified(tmp_path, isotope=b"Tc-99m")
    with pytest.raises(IsotopeError) as e:
        load_ecat(p, injection_offset_s=0.0)
    assert e.value.field == "isotope_name" and e.value.path == str(p)
