"""petbind.study.regions: [regions] patterns and volume-weighted pooling of label curves."""

from __future__ import annotations

import numpy as np
import pytest

from petbind.errors import ConfigError
from petbind.study.regions import match_labels, pool_curves, resolve_regions, split_pool
from petbind.tac import TACTable
from petbind.timing import FrameTiming

NAMES = ["Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex", "Left-Accumbens-area",
         "Right-Accumbens-area", "Left-Putamen", "Right-Putamen", "Brain-Stem"]


def test_patterns_match_exact_names_and_globs_in_atlas_order():
    assert match_labels(["*-Accumbens-area"], NAMES) == NAMES[2:4]
    assert match_labels(["Right-Putamen", "Left-Putamen"], NAMES) == NAMES[4:6]
    assert match_labels(["left-putamen"], NAMES) == []  # case-sensitive
    got = resolve_regions({"cerebellum": ["Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex"],
                           "NAcc": ["*-Accumbens-area"]}, NAMES)
    assert got == {"cerebellum": NAMES[:2], "NAcc": NAMES[2:4]}


def test_a_region_matching_no_label_is_an_error_naming_it():
    with pytest.raises(ConfigError) as e:
        resolve_regions({"VP": ["*-VentralPallidum"]}, NAMES, source="study.toml")
    assert e.value.field == "regions.VP" and "Left-Putamen" in e.value.fix


def test_pooled_curve_is_the_mean_over_the_union_of_voxels():
    rng = np.random.default_rng(3)
    timing = FrameTiming.from_seconds(np.arange(5) * 60.0, np.full(5, 60.0))
    # voxel values of two labels (7 and 2 voxels): the pooled mean is the mean of all 9
    a = rng.uniform(1, 5, (7, 5))
    b = rng.uniform(1, 5, (2, 5))
    tacs = TACTable(timing, np.stack([a.mean(0), b.mean(0)]), ["L", "R"],
                    metadata={"n_voxels": {"L": 7, "R": 2}})
    pooled, notes = pool_curves(tacs, {"both": ["L", "R"], "left": ["L"]})
    np.testing.assert_allclose(pooled.curve("both"), np.vstack([a, b]).mean(0), rtol=1e-12)
    np.testing.assert_allclose(pooled.curve("left"), a.mean(0), rtol=1e-12)
    assert notes == [] and pooled.metadata["n_voxels"] == {"both": 9.0, "left": 7.0}
    # without volumes: the plain average, with a note
    bare = TACTable(timing, tacs.values, ["L", "R"])
    eq, notes = pool_curves(bare, {"both": ["L", "R"]})
    np.testing.assert_allclose(eq.curve("both"), (a.mean(0) + b.mean(0)) / 2, rtol=1e-12)
    assert len(notes) == 1 and "equal weights" in notes[0]


def test_split_pool():
    assert split_pool("A+B") == ["A", "B"] and split_pool(" A ") == ["A"]


def test_config_regions_table_is_parsed_and_checked():
    import tomllib

    from petbind.study.config import parse_config

    base = ('[tracers.X]\nreference_region = "cerebellum"\n[[contrasts]]\n'
            'expr = "drug - baseline"\n')
    cfg = parse_config(tomllib.loads(
        base + '[regions]\ncerebellum = ["Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex"]'
        '\nNAcc = "*-Accumbens-area"\n'))
    assert cfg.regions == {"cerebellum": ("Left-Cerebellum-Cortex", "Right-Cerebellum-Cortex"),
                           "NAcc": ("*-Accumbens-area",)}
    assert cfg.to_dict()["regions"]["NAcc"] == ["*-Accumbens-area"]
    with pytest.raises(ConfigError) as e:
        parse_config(tomllib.loads(base + "[regions]\nNAcc = []\n"))
    assert e.value.field == "regions.NAcc"


def test_pipeline_pools_a_pet_space_atlas_into_configured_regions_by_voxel_count(tmp_path):
    import nibabel as nib

    from petbind.image import DynamicImage
    from petbind.study.discover import Scan
    from petbind.study.regions import region_curves

    rng = np.random.default_rng(1)
    labels = rng.choice([1, 2, 3], size=(6, 5, 4)).astype(np.int16)
    dseg = tmp_path / "x_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(dseg))
    (tmp_path / "x_dseg.tsv").write_text(
        "index\tname\tregion\n1\tLeft-Putamen\tputamen\n2\tRight-Putamen\tputamen\n"
        "3\tBrain-Stem\tbrainstem\n")
    timing = FrameTiming.from_seconds(np.array([0.0, 60.0]), np.array([60.0, 60.0]))
    data = rng.uniform(1, 9, (6, 5, 4, 2)).astype(np.float32)  # images are float32
    img = DynamicImage(data, np.eye(4), timing)
    scan = Scan(subject="01", condition="a", tracer="T", run=None, pet=tmp_path / "x.nii.gz",
                dseg=dseg, stem="x", rel_dir=".")
    # overlapping regions are fine: each is the mean over its own union of voxels
    regions = {"striatum": ("*-Putamen",), "left": ("Left-Putamen",),
               "all": ("*-Putamen", "Brain-Stem")}
    _, names, tacs, info = region_curves(scan, img, regions, None, tmp_path)
    for region, members in (("striatum", [1, 2]), ("left", [1]), ("all", [1, 2, 3])):
        mask = np.isin(labels, members)
        np.testing.assert_allclose(tacs.curve(region), data[mask].astype(float).mean(axis=0),
                                   rtol=1e-12)
        assert tacs.metadata["n_voxels"][region] == mask.sum()
    assert info["regions"]["striatum"] == ["Left-Putamen", "Right-Putamen"]
    assert names == {1: "striatum", 2: "striatum", 3: "all"}  # map mask: first region
    # without [regions]: the dseg.tsv region column, as before
    _, _, plain, _ = region_curves(scan, img, {}, None, tmp_path)
    assert list(plain.regions) == ["putamen", "brainstem"]
