"""Tests for petbind.io.nifti: images without sidecar plus a timing table."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import DecayError, TimingError
from petbind.io.nifti import load_nifti
from petbind.timing import FrameTiming

C11_HALF_LIFE_MIN = 20.364


def _timing_tsv(tmp, durs):
    starts = np.concatenate([[0], np.cumsum(durs)[:-1]])
    p = tmp / "frames.tsv"
    p.write_text("frame_start\tframe_end\n" + "".join(
        f"{s:g}\t{s + d:g}\n" for s, d in zip(starts, durs, strict=True)))
    return p, starts


def test_uncorrected_nifti_with_timing_table_is_decay_corrected_exactly(tmp_path):
    durs = [60.0, 120.0, 300.0]
    tsv, starts = _timing_tsv(tmp_path, durs)
    lam = math.log(2) / (C11_HALF_LIFE_MIN * 60)
    frac = [(math.exp(-lam * s) - math.exp(-lam * (s + d))) / (lam * d)
            for s, d in zip(starts, durs, strict=True)]
    data = np.ones((3, 3, 2, 3)) * 5000.0 * np.array(frac)  # Bq/mL, true 5 kBq/mL
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), str(tmp_path / "a.nii.gz"))
    img = load_nifti(tmp_path / "a.nii.gz", tsv, units="Bq/mL", decay_corrected=False,
                     isotope="C-11")
    np.testing.assert_allclose(img.get_data(), 5.0, rtol=1e-6)


def test_analyze_pair_is_read_with_timing_object(tmp_path):
    data = np.arange(2 * 2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2, 2)
    nib.save(nib.AnalyzeImage(data, np.eye(4)), str(tmp_path / "a.img"))
    timing = FrameTiming.from_schedule([(2, 60)])
    img = load_nifti(tmp_path / "a.img", timing, units="kBq/mL", decay_corrected=True)
    np.testing.assert_array_equal(img.get_data(), data)


def test_corrected_to_a_later_time_needs_and_uses_the_isotope(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, 2), np.float32), np.eye(4)),
             str(tmp_path / "a.nii"))
    timing = FrameTiming.from_schedule([(2, 60)])
    with pytest.raises(DecayError):
        load_nifti(tmp_path / "a.nii", timing, units="kBq/mL", decay_corrected=True,
                   decay_reference_min=10.0)
    img = load_nifti(tmp_path / "a.nii", timing, units="kBq/mL", decay_corrected=True,
                     decay_reference_min=10.0, isotope="11C")
    np.testing.assert_allclose(img.frame_scale, 2 ** (10.0 / C11_HALF_LIFE_MIN), rtol=1e-12)


def test_timing_table_with_wrong_frame_count_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2, 4), np.float32), np.eye(4)),
             str(tmp_path / "a.nii"))
    tsv, _ = _timing_tsv(tmp_path, [60.0, 60.0, 60.0])
    with pytest.raises(TimingError):
        load_nifti(tmp_path / "a.nii", tsv, units="kBq/mL", decay_corrected=True)
