"""petbind.io.atlas: label images and label tables, one name rule, one error class per fault."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from petbind.errors import FileFormatError, MetadataError
from petbind.io.atlas import (
    check_labels_named,
    label_table_path,
    read_label_image,
    read_label_table,
)


def test_label_table_beside_a_dseg_image(tmp_path):
    assert label_table_path(tmp_path / "a_dseg.nii.gz") == tmp_path / "a_dseg.tsv"
    assert label_table_path(tmp_path / "a_dseg.nii") == tmp_path / "a_dseg.tsv"


def test_a_label_s_region_is_its_region_cell_else_its_name(tmp_path):
    with_region = tmp_path / "a_dseg.tsv"
    with_region.write_text("index\tname\tregion\n1\tcaudate_L\tcaudate\n2\tcaudate_R\tcaudate\n")
    t = read_label_table(with_region)
    assert list(t["index"]) == [1, 2] and list(t["region"]) == ["caudate", "caudate"]
    assert list(t["name"]) == ["caudate_L", "caudate_R"]
    plain = tmp_path / "b_dseg.tsv"
    plain.write_text("index\tname\n7\t01\n")  # a name that looks like a number stays text
    t = read_label_table(plain)
    assert list(t["region"]) == ["01"] and t["index"].tolist() == [7]


def test_freesurfer_colour_table_is_read_with_the_same_columns(tmp_path):
    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text("#No. Label Name: R G B A\n\n0  Unknown  0 0 0 0\n"
                   "8  Left-Cerebellum-Cortex  230 148 34 0  # comment\n")
    t = read_label_table(lut)
    assert list(t.columns) == ["index", "name", "region"]
    assert t.values.tolist() == [[0, "Unknown", "Unknown"],
                                 [8, "Left-Cerebellum-Cortex", "Left-Cerebellum-Cortex"]]
    bad = tmp_path / "bad.txt"
    bad.write_text("8 Left 1 2 3 0\nnot a line\n")
    with pytest.raises(MetadataError, match="line 2") as e:
        read_label_table(bad)
    assert e.value.field == "line 2"


@pytest.mark.parametrize("text, field", [("index\tlabel\n1\tx\n", "name"),
                                         ("name\n x\n", "index"),
                                         ("index\tname\none\tx\n", "index")])
def test_a_table_without_index_and_name_is_a_metadata_error_naming_the_column(
        tmp_path, text, field):
    p = tmp_path / "t_dseg.tsv"
    p.write_text(text)
    with pytest.raises(MetadataError) as e:
        read_label_table(p)
    assert e.value.field == field and e.value.path == str(p)


def test_missing_table_is_a_metadata_error(tmp_path):
    with pytest.raises(MetadataError, match="not found"):
        read_label_table(tmp_path / "none_dseg.tsv")


def test_label_image_is_int32_3d_and_refuses_probability_maps(tmp_path):
    lab = np.zeros((3, 3, 3, 1), np.float32)
    lab[0, 0, 0, 0], lab[1, 1, 1, 0] = 4.0, 9.0
    p = tmp_path / "a_dseg.nii.gz"
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 2.0, 1.0])), p)
    labels, affine, _ = read_label_image(p)
    assert labels.dtype == np.int32 and labels.shape == (3, 3, 3)
    assert set(np.unique(labels)) == {0, 4, 9} and affine[0, 0] == 2.0
    prob = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(lab * 0.3, np.eye(4)), prob)
    with pytest.raises(FileFormatError, match="non-integer") as e:
        read_label_image(prob, field="pvc.atlas")
    assert e.value.field == "pvc.atlas"
    with pytest.raises(FileFormatError, match="not found"):
        read_label_image(tmp_path / "none.nii.gz")


def test_every_label_of_the_image_must_be_named(tmp_path):
    p = tmp_path / "a_dseg.tsv"
    p.write_text("index\tname\n4\tx\n")
    table = read_label_table(p)
    labels = np.array([[[0, 4, 9, 9]]])
    with pytest.raises(MetadataError, match=r"\[9\]") as e:
        check_labels_named(labels, table, p)
    assert e.value.field == "index"
    assert check_labels_named(np.array([[[0, 4]]]), table, p) == {4}
