"""TAC table headers: no silent renaming, and a weights column is not a region (issue 17)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petbind.errors import DataError, FileFormatError
from petbind.io.tables import read_tacs

ROWS = "0\t60\t1\t2\t3\n60\t120\t1\t2\t3\n"


def _bids(tmp, header, rows=ROWS):
    p = tmp / "x_tacs.tsv"
    p.write_text(header + "\n" + rows)
    p.with_suffix(".json").write_text(json.dumps({"Units": "kBq/mL"}))
    return p


@pytest.mark.parametrize("header,field", [
    ("frame_start\tframe_end\tcortex\tcortex\tcerebellum", "cortex"),
    ("frame_start\tframe_end\tcortex\t \tcerebellum", "header"),
])
def test_duplicate_or_blank_column_names_are_refused(tmp_path, header, field):
    with pytest.raises(FileFormatError) as e:
        read_tacs(_bids(tmp_path, header))
    assert e.value.field == field and "x_tacs.tsv" in str(e.value)


def test_pmod_names_that_collide_after_unit_stripping_are_refused(tmp_path):
    p = tmp_path / "x.tac"
    p.write_text("start[seconds]\tend[kBq/cc]\tcortex[kBq/cc]\tcortex\n0\t60\t1\t2\n"
                 "60\t120\t1\t2\n")
    with pytest.raises(FileFormatError) as e:
        read_tacs(p)
    assert e.value.field == "cortex"


def test_dft_duplicate_region_is_refused(tmp_path):
    p = tmp_path / "x.dft"
    p.write_text("DFT1\tcortex\tcortex\n.\t.\t.\nkBq/mL\t.\t.\nTimes (min)\t.\t.\n"
                 "0\t1\t1\t2\n1\t2\t1\t2\n")
    with pytest.raises(FileFormatError):
        read_tacs(p)


def test_weights_column_goes_to_metadata_and_bad_weights_are_refused(tmp_path):
    t = read_tacs(_bids(tmp_path, "frame_start\tframe_end\tcortex\tweights\tcerebellum",
                        "0\t60\t1\t0.5\t3\n60\t120\t1\t2\t3\n"))
    assert t.regions == ["cortex", "cerebellum"]
    np.testing.assert_array_equal(t.metadata["frame_weights"], [0.5, 2.0])
    with pytest.raises(DataError) as e:
        read_tacs(_bids(tmp_path, "frame_start\tframe_end\tcortex\tweights",
                        "0\t60\t1\t-1\n60\t120\t1\t2\n"))
    assert e.value.field == "weights"
