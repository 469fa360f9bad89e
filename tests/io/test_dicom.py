"""Tests for petbind.io.dicom with small synthetic PET series written by pydicom."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from petbind.errors import DecayError, FileFormatError, MetadataError, TimingError, UnitsError
from petbind.io.dicom import load_dicom

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
C11_HALF_LIFE_S = 20.364 * 60  # NNDC NuDat 3
COLS, ROWS, NZ = 4, 3, 3
SERIES_TIME = dt.datetime(2026, 1, 5, 10, 0, 0)


def _t(x: dt.datetime) -> str:
    return x.strftime("%H%M%S.%f")


def write_series(folder: Path, counts: np.ndarray, starts_s, durs_s, *, decay="START",
                 decay_factors=None, units="BQML", injection_before_s=90.0, slopes=None,
                 series_uid=None, skip=()) -> Path:
    """One file per slice and frame; ``counts`` is int (ROWS, COLS, NZ, T)."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    n_frames = counts.shape[3]
    inj = SERIES_TIME - dt.timedelta(seconds=injection_before_s)
    k = 0
    for t in range(n_frames):
        for z in range(NZ):
            if (t, z) in skip:
                continue
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = PET_STORAGE
            ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = PET_STORAGE
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            ds.Modality = "PT"
            ds.SeriesInstanceUID = uid
            ds.SeriesDate = SERIES_TIME.strftime("%Y%m%d")
            ds.SeriesTime = _t(SERIES_TIME)
            acq = SERIES_TIME + dt.timedelta(seconds=float(starts_s[t]))
            ds.AcquisitionDate = acq.strftime("%Y%m%d")
            ds.AcquisitionTime = _t(acq)
            ds.ActualFrameDuration = int(durs_s[t] * 1000)
            ds.FrameReferenceTime = float(starts_s[t] + durs_s[t] / 2) * 1000
            ds.NumberOfSlices = NZ
            ds.NumberOfTimeSlices = n_frames
            ds.ImageIndex = t * NZ + z + 1
            ds.Units = units
            ds.DecayCorrection = decay
            ds.DecayFactor = 1.0 if decay_factors is None else float(decay_factors[t])
            ds.Rows, ds.Columns = ROWS, COLS
            ds.PixelSpacing = [2.0, 1.5]  # row spacing, column spacing
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-20.0, -30.0, -10.0 + 3.0 * z]
            ds.SliceThickness = 3.0
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleSlope = 1.0 if slopes is None else float(slopes[z])
            ds.RescaleIntercept = 0.0
            ds.PixelData = counts[:, :, z, t].astype("<i2").tobytes()
            item = Dataset()
            item.Radiopharmaceutical = "DASB"
            item.RadionuclideHalfLife = C11_HALF_LIFE_S
            item.RadiopharmaceuticalStartTime = _t(inj)
            ds.RadiopharmaceuticalInformationSequence = [item]
            ds.save_as(folder / f"im{k:04d}.dcm", enforce_file_format=True)
            k += 1
    return folder


STARTS = [0.0, 60.0, 180.0]
DURS = [60.0, 120.0, 300.0]


def _counts():
    rng = np.random.default_rng(7)
    return rng.integers(100, 3000, size=(ROWS, COLS, NZ, len(STARTS)))


def test_values_slopes_and_start_decay_are_converted_to_kbq_at_injection(tmp_path):
    counts = _counts()
    slopes = [0.5, 2.0, 4.0]
    write_series(tmp_path / "s", counts, STARTS, DURS, slopes=slopes, injection_before_s=90.0)
    img = load_dicom(tmp_path / "s")
    lam = math.log(2) / C11_HALF_LIFE_S
    bq = counts * np.array(slopes)[None, None, :, None]
    expected = bq / 1000.0 * math.exp(lam * 90.0)  # START: corrected to series time
    got = img.get_data()
    np.testing.assert_allclose(got, np.transpose(expected, (1, 0, 2, 3)), rtol=1e-6)


def test_frame_times_are_relative_to_injection(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, injection_before_s=90.0)
    img = load_dicom(tmp_path / "s")
    np.testing.assert_allclose(img.timing.start_s, np.array(STARTS) + 90.0)
    np.testing.assert_allclose(img.timing.duration_s, DURS)
    assert img.metadata["isotope"] == "11C"


def test_affine_maps_dicom_lps_to_ras(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS)
    aff = load_dicom(tmp_path / "s").affine
    expected = np.array([[-1.5, 0, 0, 20.0], [0, -2.0, 0, 30.0], [0, 0, 3.0, -10.0],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(aff, expected)


def test_uncorrected_series_gets_frame_integrated_decay_correction(tmp_path):
    counts = _counts()
    write_series(tmp_path / "s", counts, STARTS, DURS, decay="NONE", injection_before_s=30.0)
    img = load_dicom(tmp_path / "s")
    lam = math.log(2) / C11_HALF_LIFE_S
    a = np.array(STARTS) + 30.0
    d = np.array(DURS)
    df = lam * d * np.exp(lam * a) / (1 - np.exp(-lam * d))
    np.testing.assert_allclose(img.frame_scale, df / 1000.0, rtol=1e-9)


def test_admin_decay_needs_no_further_correction(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, decay="ADMIN")
    np.testing.assert_allclose(load_dicom(tmp_path / "s").frame_scale, 1e-3)


def test_decay_none_with_decay_factors_is_refused(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, decay="NONE",
                 decay_factors=[1.0, 1.05, 1.2])
    with pytest.raises(DecayError) as e:
        load_dicom(tmp_path / "s")
    assert e.value.field == "DecayFactor"


def test_counts_units_are_refused(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, units="CNTS")
    with pytest.raises(UnitsError):
        load_dicom(tmp_path / "s")


def test_missing_slice_is_refused(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, skip={(1, 2)})
    with pytest.raises(FileFormatError) as e:
        load_dicom(tmp_path / "s")
    assert e.value.field == "ImageIndex"


def test_two_series_in_one_folder_are_refused(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS)
    write_series(tmp_path / "s2", _counts(), STARTS, DURS)
    for f in (tmp_path / "s2").iterdir():
        f.rename(tmp_path / "s" / f"b_{f.name}")
    with pytest.raises(FileFormatError) as e:
        load_dicom(tmp_path / "s")
    assert e.value.field == "SeriesInstanceUID"


def test_injection_after_series_start_is_refused(tmp_path):
    write_series(tmp_path / "s", _counts(), STARTS, DURS, injection_before_s=-60.0)
    with pytest.raises(TimingError):
        load_dicom(tmp_path / "s")


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(FileFormatError):
        load_dicom(tmp_path)


def test_missing_geometry_attribute_is_named(tmp_path):
    import pydicom

    write_series(tmp_path / "s", _counts(), STARTS, DURS)
    for f in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    with pytest.raises(MetadataError) as e:
        load_dicom(tmp_path / "s")
    assert e.value.field == "PixelSpacing"


def test_validate_reads_a_dicom_series_folder(tmp_path):
    from petbind.io.validate import validate_path

    write_series(tmp_path / "ok", _counts(), STARTS, DURS)
    assert validate_path(tmp_path / "ok") == []
    write_series(tmp_path / "bad", _counts(), STARTS, DURS, units="CNTS")
    (q,) = validate_path(tmp_path / "bad")
    assert (q.severity, q.field, q.error) == ("error", "Units", UnitsError)
