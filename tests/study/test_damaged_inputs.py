"""petbind run refuses a damaged input instead of fitting it (issue 17)."""

from __future__ import annotations

import shutil

import pytest

from petbind.errors import FileFormatError
from petbind.study.config import load_config
from petbind.study.pipeline import run_study


def _break_crc(path):
    """Flip one bit of the gzip trailer's CRC-32: the data decode, the check fails."""
    b = bytearray(path.read_bytes())
    b[-8] ^= 0x01
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("which", ["pet", "dseg"])
def test_run_refuses_a_pet_image_or_atlas_with_a_gzip_crc_error(noise_free_study, tmp_path,
                                                                  which):
    bids = tmp_path / "bids"
    shutil.copytree(noise_free_study["bids"], bids, ignore=shutil.ignore_patterns("petbind"))
    pattern = ("sub-01/ses-baseline/pet/*_pet.nii.gz" if which == "pet" else
               "derivatives/petbind-sim/sub-01/ses-baseline/pet/*_dseg.nii.gz")
    target = next(bids.glob(pattern))
    _break_crc(target)
    with pytest.raises(FileFormatError) as e:
        run_study(bids, load_config(noise_free_study["config"]), out_dir=tmp_path / "out",
                  progress=False)
    assert e.value.path == str(target) and e.value.field == "data"
    # nothing of the damaged scan was written (its region curves are checked before use)
    assert not [p for p in (tmp_path / "out").rglob(target.name.split("_pet")[0] + "*")
                if p.is_file()]
