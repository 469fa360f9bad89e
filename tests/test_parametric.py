"""Tests of petbind.parametric: voxelwise maps from the one model engine.

Truth comes from an independent analytic generator written here: a plasma
input that is a sum of exponentials, reference and target regions that are
one-tissue compartments (so SRTM holds exactly: V_ND equal in both), and
frame means of the closed-form convolution integrated exactly over each
frame. No petbind code produces the expected numbers.
"""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest

from petbind.compute import usable_cpus
from petbind.errors import DataError, PetbindError
from petbind.image import DynamicImage
from petbind.models import make_model
from petbind.parametric import (
    RefCurve,
    brain_mask,
    estimate_k2prime,
    parametric_maps,
    write_maps,
)
from petbind.timing import FrameTiming

# Demo frame schedule (PET_PRIMER section 5): 29 frames, 90 min.
SCHEDULE = [(6, 10), (3, 20), (2, 30), (4, 60), (4, 120), (5, 300), (5, 600)]
TIMING = FrameTiming.from_schedule(SCHEDULE, unit="s")

# Plasma input Cp(t) = sum_i A_i exp(-l_i t), kBq/mL, t in min; Cp(0) = 0.
CP_A = np.array([40.0, 4.0, -44.0])
CP_L = np.array([1.2137, 0.04321, 6.037])  # no target k2 coincides with them
K1_REF, K2_REF = 0.4, 0.1  # reference region (cerebellum), mL/cm3/min and 1/min


def _frame_mean_exp(rate: np.ndarray) -> np.ndarray:
    """Frame means of exp(-rate t) over every frame; rate (...,) -> (..., n_frames)."""
    r = np.asarray(rate, dtype=float)[..., None]
    s, e = TIMING.start, TIMING.end
    return (np.exp(-r * s) - np.exp(-r * e)) / (r * (e - s))


def one_tissue_frames(k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """Exact frame means of K1 exp(-k2 t) (*) Cp for arrays of (K1, k2)."""
    k1 = np.asarray(k1, dtype=float)
    k2 = np.asarray(k2, dtype=float)
    out = np.zeros(np.broadcast_shapes(k1.shape, k2.shape) + (TIMING.n_frames,))
    fk = _frame_mean_exp(k2)
    for a, lam in zip(CP_A, CP_L, strict=True):
        # int_0^t A e^{-lam s} e^{-k2 (t-s)} ds = A (e^{-lam t} - e^{-k2 t}) / (k2 - lam)
        out += (a / (k2 - lam))[..., None] * (_frame_mean_exp(lam) - fk)
    return k1[..., None] * out


def target_frames(bp: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Target region with V_ND = K1'/k2': K1 = R1 K1', apparent k2 = R1 k2' / (1 + BP)."""
    bp = np.asarray(bp, dtype=float)
    r1 = np.asarray(r1, dtype=float)
    return one_tissue_frames(r1 * K1_REF, r1 * K2_REF / (1.0 + bp))


REF = one_tissue_frames(np.array(K1_REF), np.array(K2_REF))
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-10.0, -12.0, -4.0]


def make_image(noise: float = 0.0, seed: int = 0):
    """A small 4D image with known BP_ND / R1 per voxel.

    Shape (8, 7, 5): x = 0 is background (zeros); the slab z = 0 (x > 0) is
    the reference region (BP_ND 0, R1 1); the rest has BP_ND from 0.2 to 3
    and R1 from 0.8 to 1.25 varying over voxels.
    """
    shape = (8, 7, 5)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    bp = np.where(k > 0, 0.2 + 2.8 * ((i * 7 + j) % 13) / 12.0, 0.0)
    r1 = np.where(k > 0, 0.8 + 0.45 * ((j * 5 + k) % 7) / 6.0, 1.0)
    data = target_frames(bp, r1)
    data[0] = 0.0
    if noise:
        rng = np.random.default_rng(seed)
        lam = np.log(2) / 20.38
        sd = noise * np.sqrt(np.maximum(data, 0) * np.exp(lam * TIMING.mid) / TIMING.duration)
        data = data + sd * rng.standard_normal(data.shape)
    ref_mask = (k == 0) & (i > 0)
    brain = i > 0
    return data.astype(np.float32), bp, r1, ref_mask, brain


def dyn(data: np.ndarray, affine: np.ndarray = AFFINE) -> DynamicImage:
    return DynamicImage(data, affine, TIMING, {}, None)


# ----------------------------------------------------------------------------
# truth recovery
# ----------------------------------------------------------------------------
# Model-engine tolerances on noise-free SRTM-exact data (issue 3): 0.1 % for
# SRTM / SRTM2 / BF-SRTM / MRTM2 with the true k2'; Logan reference 0.5 %
# after equilibrium. Voxel maps are stored as float32 (7 digits), which is
# well inside those.
@pytest.mark.parametrize(("model", "k2prime", "settings", "rtol"), [
    ("mrtm2", K2_REF, {}, 1e-3),
    ("srtm2", K2_REF, {}, 1e-3),
    ("srtm", None, {}, 1e-3),
    ("bfsrtm", None, {}, 1e-3),
    ("logan", K2_REF, {"tstar": 35.0}, 5e-3),
])
def test_maps_recover_true_bpnd_on_noise_free_image(model, k2prime, settings, rtol):
    data, bp, _r1, ref_mask, brain = make_image()
    res = parametric_maps(dyn(data), model=model, ref_curve=ref_mask, mask=brain & ~ref_mask,
                          k2prime=k2prime, model_settings=settings, scheduler="sync")
    fitted = brain & ~ref_mask
    assert res.valid[fitted].all()
    assert not res.valid[~fitted].any()
    assert np.all(np.isnan(res.bp_nd[~fitted]))
    np.testing.assert_allclose(res.bp_nd[fitted], bp[fitted], rtol=rtol)


def test_srtm_map_recovers_true_r1_on_noise_free_image():
    data, _bp, r1, ref_mask, brain = make_image()
    res = parametric_maps(dyn(data), model="srtm", ref_curve=ref_mask, mask=brain & ~ref_mask,
                          scheduler="sync")
    m = brain & ~ref_mask
    np.testing.assert_allclose(res.maps["r1"][m], r1[m], rtol=1e-3)
    assert "bp_nd" in res.se and np.all(np.isfinite(res.se["bp_nd"][m]))


def test_suvr_map_is_the_late_tissue_to_reference_ratio():
    data, _bp, _r1, ref_mask, brain = make_image()
    window = {"start": 30.0, "end": 90.0}
    res = parametric_maps(dyn(data), model="suvr", ref_curve=ref_mask, mask=brain,
                          model_settings=window, scheduler="sync")
    w = TIMING.window(30.0, 90.0) * TIMING.duration
    ref = data[ref_mask].astype(float).mean(axis=0)
    expected = (data[brain].astype(float) @ w) / (ref @ w)
    key = "suvr" if "suvr" in res.maps else "dvr"
    np.testing.assert_allclose(res.maps[key][brain], expected, rtol=1e-5)


def test_auto_k2prime_from_the_default_high_binding_region_recovers_truth():
    data, bp, _r1, ref_mask, brain = make_image()
    res = parametric_maps(dyn(data), model="mrtm2", ref_curve=ref_mask, mask=brain,
                          k2prime="auto", scheduler="sync")
    est = res.settings["k2prime_estimate"]
    assert est["method"] == "auto" and est["n_voxels"] == round(0.02 * brain.sum())
    # the top 2 % by late ratio here are BP_ND = 3 voxels of similar R1; their mean
    # curve is close to one-tissue, so MRTM on it is close to the true k2'
    assert res.k2prime == pytest.approx(K2_REF, rel=2e-3)
    m = brain & ~ref_mask
    np.testing.assert_allclose(res.bp_nd[m], bp[m], rtol=5e-3)


def test_auto_k2prime_on_a_wide_heterogeneous_region_is_biased_but_close():
    data, _bp, _r1, ref_mask, brain = make_image()
    curves = data[brain].astype(float)
    ref = data[ref_mask].astype(float).mean(axis=0)
    # 30 % of voxels pool different R1 and BP_ND: their mean curve is not exactly
    # one-tissue, so MRTM on it is biased (a few %), unlike the voxels alone
    k2, info = estimate_k2prime(curves, ref, TIMING, method="auto", top_fraction=0.3)
    assert info["n_voxels"] == round(0.3 * curves.shape[0])
    assert k2 == pytest.approx(K2_REF, rel=0.05)
    assert abs(k2 / K2_REF - 1) > 1e-3


@pytest.mark.parametrize("model", ["mrtm2", "srtm2"])
def test_auto_k2prime_from_a_homogeneous_user_region_recovers_truth(model):
    data, bp, r1, ref_mask, brain = make_image()
    region = brain & (bp == bp.max()) & (r1 == r1.min())
    assert region.sum() >= 2
    res = parametric_maps(dyn(data), model=model, ref_curve=ref_mask, mask=brain,
                          k2prime="auto", k2prime_region=region, scheduler="sync")
    assert res.k2prime == pytest.approx(K2_REF, rel=1e-3)
    assert res.settings["k2prime_estimate"]["model"] == ("srtm" if model == "srtm2"
                                                         else "mrtm")


def test_pooled_k2prime_is_the_median_of_voxel_mrtm_estimates():
    data, _bp, _r1, ref_mask, brain = make_image()
    curves = data[brain].astype(float)
    ref = data[ref_mask].astype(float).mean(axis=0)
    k2, info = estimate_k2prime(curves, ref, TIMING, method="pooled", top_fraction=0.3)
    assert k2 == pytest.approx(K2_REF, rel=2e-3)
    assert info["n_voxels"] == round(0.3 * curves.shape[0])


# ----------------------------------------------------------------------------
# voxel fits == region fits; chunking and schedulers do not change results
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["mrtm2", "bfsrtm", "srtm"])
def test_voxel_fits_equal_region_fits_of_the_same_curves(model):
    data, _bp, _r1, ref_mask, brain = make_image(noise=0.05, seed=3)
    m = brain & ~ref_mask
    res = parametric_maps(dyn(data), model=model, ref_curve=ref_mask, mask=m,
                          k2prime=K2_REF if model == "mrtm2" else None, scheduler="sync")
    # the same curves, fitted as a table of "regions" by the engine directly
    ref = data[ref_mask].astype(np.float64).mean(axis=0)
    kw = {"k2prime": K2_REF} if model == "mrtm2" else {}
    fit = make_model(model, TIMING, ref, **kw).fit(data[m].astype(np.float64))
    ok = np.asarray(fit.valid)
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(res.valid[m], ok)
    np.testing.assert_allclose(res.bp_nd[m][ok], fit.params["bp_nd"][ok], rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("model", ["mrtm2", "srtm"])
def test_chunked_maps_equal_unchunked_maps(model):
    data, _bp, _r1, ref_mask, brain = make_image(noise=0.05, seed=4)
    kw = dict(model=model, ref_curve=ref_mask, mask=brain, scheduler="sync",
              k2prime=K2_REF if model == "mrtm2" else None)
    whole = parametric_maps(dyn(data), chunk_voxels=10_000_000, **kw)
    parts = parametric_maps(dyn(data), chunk_voxels=17, **kw)
    assert parts.settings["n_chunks"] > 1 and whole.settings["n_chunks"] == 1
    np.testing.assert_array_equal(parts.valid, whole.valid)
    for k in whole.maps:
        np.testing.assert_allclose(parts.maps[k], whole.maps[k], rtol=1e-6, equal_nan=True)


def test_dask_threads_distributed_client_and_address_equal_in_process():
    distributed = pytest.importorskip("distributed")
    data, _bp, _r1, ref_mask, brain = make_image(noise=0.05, seed=5)
    kw = dict(model="bfsrtm", ref_curve=ref_mask, mask=brain, chunk_voxels=40)
    sync = parametric_maps(dyn(data), scheduler="sync", **kw)
    threads = parametric_maps(dyn(data), scheduler="threads", **kw)
    assert threads.settings["scheduler"] == f"threads ({usable_cpus()} workers)"
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": ":0"}) as cluster:
        with distributed.Client(cluster) as client:
            dist = parametric_maps(dyn(data), scheduler=client, **kw)
        by_address = parametric_maps(dyn(data), scheduler=cluster.scheduler_address, **kw)
    assert by_address.settings["scheduler"].startswith("dask distributed")
    for other in (threads, dist, by_address):
        np.testing.assert_array_equal(other.valid, sync.valid)
        for k in sync.maps:
            np.testing.assert_array_equal(other.maps[k], sync.maps[k])


def test_progress_reports_every_fitted_voxel():
    data, _bp, _r1, ref_mask, brain = make_image()
    seen = []
    parametric_maps(dyn(data), model="mrtm2", ref_curve=ref_mask, mask=brain,
                    k2prime=K2_REF, chunk_voxels=50, scheduler="threads",
                    progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (int(brain.sum()), int(brain.sum()))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ----------------------------------------------------------------------------
# robustness: unusable voxels are masked and counted, silently
# ----------------------------------------------------------------------------
def test_nan_and_no_signal_voxels_are_masked_counted_and_silent():
    data, _bp, _r1, ref_mask, brain = make_image()
    data[3, 3, 3, 5] = np.nan
    data[4, 4, 4, :] = 0.0
    data[5, 5, 2, :] = -1.0
    data[2, 2, 2, :] = 7.0  # flat curve: no kinetics to fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = parametric_maps(dyn(data), model="srtm", ref_curve=ref_mask, mask=brain,
                              scheduler="sync")
    c = res.counts
    assert c["n_nonfinite"] == 1 and c["n_no_signal"] == 2
    assert c["n_fitted"] == int(brain.sum()) - 3
    assert c["n_valid"] + c["n_fit_failed"] == c["n_fitted"]
    for v in [(3, 3, 3), (4, 4, 4), (5, 5, 2)]:
        assert not res.valid[v] and np.isnan(res.bp_nd[v])
    assert np.all(np.isfinite(res.bp_nd[res.valid]))
    assert np.all(np.isnan(res.bp_nd[~res.valid]))


def test_derived_brain_mask_follows_the_stated_rule():
    data, _bp, _r1, _ref, _brain = make_image()
    data[1, 1, 1] = 1e-4  # a faint voxel inside the image
    data[6, 6, 4, 7] = np.inf
    mean = (data.astype(float) * TIMING.duration).sum(axis=-1) / TIMING.duration.sum()
    finite = np.isfinite(data).all(axis=-1)
    pos = mean[finite & (mean > 0)]
    expected = finite & (mean > 0.25 * np.percentile(pos, 99.0))
    got = brain_mask(dyn(data), fraction=0.25)
    np.testing.assert_array_equal(got, expected)
    assert not got[0].any() and not got[1, 1, 1] and not got[6, 6, 4]


# ----------------------------------------------------------------------------
# bad input: clear errors
# ----------------------------------------------------------------------------
def test_mask_of_another_shape_is_refused():
    data, _bp, _r1, ref_mask, brain = make_image()
    with pytest.raises(DataError, match="shape") as e:
        parametric_maps(dyn(data), model="srtm", ref_curve=ref_mask, mask=brain[:, :, :4])
    assert e.value.field == "shape" and "resample" in e.value.fix


def test_mask_image_with_another_affine_is_refused(tmp_path):
    data, _bp, _r1, ref_mask, brain = make_image()
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    p = tmp_path / "brain_mask.nii.gz"
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), shifted), p)
    with pytest.raises(DataError, match="affine") as e:
        parametric_maps(dyn(data), model="srtm", ref_curve=ref_mask, mask=p)
    assert e.value.path == str(p) and e.value.field == "affine"


def test_reference_mask_without_voxels_is_refused():
    data, _bp, _r1, _ref, brain = make_image()
    with pytest.raises(DataError, match="reference region has no voxels"):
        parametric_maps(dyn(data), model="srtm", ref_curve=np.zeros(brain.shape, bool),
                        mask=brain)


def test_reference_outside_the_signal_is_refused():
    data, _bp, _r1, _ref, brain = make_image()
    background = np.zeros(brain.shape, bool)
    background[0, :2] = True
    with pytest.raises(DataError, match="no signal"):
        parametric_maps(dyn(data), model="srtm", ref_curve=background, mask=brain)


def test_three_dimensional_image_is_refused():
    data, _bp, _r1, ref_mask, brain = make_image()

    class Flat:
        dataobj = data[..., 0]
        affine = AFFINE
        timing = TIMING
        path = "sum.nii.gz"

    with pytest.raises(DataError, match="4D") as e:
        parametric_maps(Flat(), model="srtm", ref_curve=ref_mask, mask=brain)
    assert e.value.path == "sum.nii.gz"


def test_unknown_model_and_missing_k2prime_are_refused():
    data, _bp, _r1, ref_mask, brain = make_image()
    with pytest.raises(PetbindError, match="unknown model"):
        parametric_maps(dyn(data), model="2tcm", ref_curve=ref_mask, mask=brain)
    with pytest.raises(PetbindError, match="k2'"):
        parametric_maps(dyn(data), model="mrtm2", ref_curve=ref_mask, mask=brain,
                        k2prime=None)


# ----------------------------------------------------------------------------
# files: reading lazily, writing BIDS-derivative maps
# ----------------------------------------------------------------------------
def test_reference_from_atlas_label_equals_reference_from_its_mask(tmp_path):
    data, _bp, _r1, ref_mask, brain = make_image()
    atlas = np.where(ref_mask, 3, np.where(brain, 1, 0)).astype(np.int16)
    p = tmp_path / "sub-01_dseg.nii.gz"
    nib.save(nib.Nifti1Image(atlas, AFFINE), p)
    (tmp_path / "sub-01_dseg.tsv").write_text(
        "index\tname\tregion\n1\tcortex_L\tcortex\n3\tcerebellum_L\tcerebellum\n")
    by_label = parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, mask=brain,
                               ref_curve=RefCurve(label=(str(p), "cerebellum")),
                               scheduler="sync")
    by_mask = parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, mask=brain,
                              ref_curve=ref_mask, scheduler="sync")
    np.testing.assert_array_equal(by_label.ref_tac, by_mask.ref_tac)
    np.testing.assert_array_equal(by_label.bp_nd, by_mask.bp_nd)
    with pytest.raises(DataError, match="not in the atlas") as e:
        parametric_maps(dyn(data), model="srtm", mask=brain,
                        ref_curve=RefCurve(label=(str(p), "pons")))
    assert "cerebellum" in e.value.fix


def test_file_backed_gzip_image_gives_the_same_maps_as_in_memory(tmp_path):
    data, _bp, _r1, ref_mask, brain = make_image(noise=0.05, seed=6)
    p = tmp_path / "pet.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), p)
    lazy = nib.load(p)
    img = DynamicImage(lazy.dataobj, lazy.affine, TIMING, {}, str(p))
    a = parametric_maps(img, model="mrtm2", k2prime=K2_REF, ref_curve=ref_mask, mask=brain)
    b = parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, ref_curve=ref_mask,
                        mask=brain)
    np.testing.assert_array_equal(a.bp_nd, b.bp_nd)
    assert str(p) in a.inputs


def test_write_maps_writes_named_maps_with_provenance_sidecars(tmp_path):
    data, _bp, _r1, ref_mask, brain = make_image()
    res = parametric_maps(dyn(data), model="srtm2", k2prime=K2_REF, ref_curve=ref_mask,
                          mask=brain, scheduler="sync")
    out = tmp_path / "out"
    files = write_maps(res, out, "sub-01_ses-baseline_trc-AZ10419369",
                       sidecar_extra={"Pipeline": "test"})
    names = {f.name for f in files}
    stem = "sub-01_ses-baseline_trc-AZ10419369_desc-srtm2"
    assert {f"{stem}_bpnd.nii.gz", f"{stem}_r1.nii.gz", f"{stem}_mask.nii.gz"} <= names
    img = nib.load(out / f"{stem}_bpnd.nii.gz")
    np.testing.assert_allclose(img.affine, AFFINE)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), res.bp_nd)
    assert img.get_data_dtype() == np.float32
    valid = np.asanyarray(nib.load(out / f"{stem}_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(valid.astype(bool), res.valid)
    side = json.loads((out / f"{stem}_bpnd.json").read_text())
    assert side["Model"] == "srtm2" and side["K2Prime"] == pytest.approx(K2_REF)
    assert side["Parameter"] == "bp_nd" and side["Pipeline"] == "test"
    assert side["SoftwareName"] == "petbind" and side["SoftwareVersion"]
    assert side["VoxelCounts"]["n_valid"] == int(res.valid.sum())
    assert not list(out.glob(".*part*"))  # no temporary files left behind


def test_reference_from_a_tac_table_in_bq_per_ml_equals_reference_from_its_mask(tmp_path):
    data, _bp, _r1, ref_mask, brain = make_image()
    ref = data[ref_mask].astype(np.float64).mean(axis=0)
    tsv = tmp_path / "sub-01_tacs.tsv"
    rows = ["frame_start\tframe_end\tpons\tcerebellum"]
    rows += [f"{float(s)!r}\t{float(e)!r}\t1.0\t{float(v) * 1000.0!r}"  # Bq/mL in the file
             for s, e, v in zip(TIMING.start_s, TIMING.end * 60.0, ref, strict=True)]
    tsv.write_text("\n".join(rows) + "\n")
    (tmp_path / "sub-01_tacs.json").write_text(json.dumps({"Units": "Bq/mL"}))
    by_tac = parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, mask=brain,
                             ref_curve=RefCurve(tac=(str(tsv), "cerebellum")),
                             scheduler="sync")
    by_mask = parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, mask=brain,
                              ref_curve=ref_mask, scheduler="sync")
    np.testing.assert_allclose(by_tac.ref_tac, by_mask.ref_tac, rtol=1e-12)
    np.testing.assert_allclose(by_tac.bp_nd, by_mask.bp_nd, rtol=1e-5, equal_nan=True)
    assert str(tsv) in by_tac.inputs
    with pytest.raises(DataError, match="putamen") as e:
        parametric_maps(dyn(data), model="mrtm2", k2prime=K2_REF, mask=brain,
                        ref_curve=RefCurve(tac=(str(tsv), "putamen")))
    assert "cerebellum" in e.value.fix


def test_automatic_chunks_keep_working_memory_within_half_the_input():
    from petbind.parametric import MIN_CHUNK_VOXELS, WORK_BYTES, _auto_chunk

    n_frames, workers = 29, 2
    input_bytes = 4 * 128 * 128 * 90 * n_frames  # a 128 x 128 x 90 x 29 float32 image
    for model in ("mrtm2", "bfsrtm", "srtm"):
        chunk = _auto_chunk(model, 600_000, n_frames, workers, input_bytes)
        assert MIN_CHUNK_VOXELS <= chunk
        assert workers * chunk * n_frames * WORK_BYTES[model] <= input_bytes / 2
    # every worker gets a chunk, even for a small mask
    assert _auto_chunk("mrtm2", 3_000, n_frames, workers, input_bytes) == 1_500


def test_pooled_k2prime_through_parametric_maps_is_recorded():
    data, bp, _r1, ref_mask, brain = make_image()
    res = parametric_maps(dyn(data), model="srtm2", ref_curve=ref_mask, mask=brain,
                          k2prime="pooled", scheduler="sync")
    assert res.k2prime == pytest.approx(K2_REF, rel=2e-3)
    est = res.settings["k2prime_estimate"]
    assert est["method"] == "pooled" and est["model"] == "srtm" and est["n_valid"] >= 1
    m = brain & ~ref_mask
    np.testing.assert_allclose(res.bp_nd[m], bp[m], rtol=5e-3)


def test_auto_k2prime_never_selects_unusable_voxels():
    data, _bp, _r1, ref_mask, brain = make_image()
    data[2, 3, 4] *= 50.0  # would top the late-ratio ranking ...
    data[2, 3, 4, 0] = np.nan  # ... but is not finite, so it is not fitted at all
    res = parametric_maps(dyn(data), model="mrtm2", ref_curve=ref_mask, mask=brain,
                          k2prime="auto", scheduler="sync")
    assert res.counts["n_nonfinite"] == 1
    assert res.k2prime == pytest.approx(K2_REF, rel=2e-3)


@pytest.mark.parametrize("model", ["mrtm2", "bfsrtm", "srtm"])
def test_working_memory_of_a_chunk_fit_stays_within_its_stated_budget(model):
    import tracemalloc

    from petbind.parametric import WORK_BYTES, _fit_chunk

    data, _bp, _r1, ref_mask, brain = make_image(noise=0.05, seed=6)
    ref = data[ref_mask].astype(np.float64).mean(axis=0)
    # (frames, voxels) float32: about 50,000 voxels, the size of an automatic chunk
    # (12,000 for SRTM, whose memory is all per voxel), so fixed per-block buffers count
    # as they do in a real map
    reps = 50 if model == "srtm" else 200
    curves = np.ascontiguousarray(np.tile(data[brain], (reps, 1)).T)
    kw = {"k2prime": K2_REF} if model == "mrtm2" else {}
    fmodel = make_model(model, TIMING, ref, **kw)
    _fit_chunk(fmodel, curves.T[:8], ())  # build the model's caches outside the trace
    tracemalloc.start()
    _fit_chunk(fmodel, curves.T, ())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak <= WORK_BYTES[model] * curves.size


def test_logan_map_without_k2prime_is_what_the_docstring_says():
    # parametric_maps(model="logan", k2prime=None) documented Logan without k2' and
    # raised (review, problem 1); truth: voxels that are c x the reference curve have
    # DVR = c exactly in the no-k2' plot, for any t*
    _data, _bp, _r1, ref_mask, brain = make_image()
    shape = ref_mask.shape
    c = np.where(ref_mask, 1.0, 1.0 + (np.arange(np.prod(shape)).reshape(shape) % 9) / 4.0)
    data = (c[..., None] * REF).astype(np.float64)
    data[0] = 0.0
    for k2prime in (None, "none"):
        res = parametric_maps(dyn(data), model="logan", ref_curve=ref_mask,
                              mask=brain & ~ref_mask, k2prime=k2prime,
                              model_settings={"tstar": 20.0}, scheduler="sync")
        fitted = brain & ~ref_mask
        assert res.valid[fitted].all() and res.k2prime is None
        np.testing.assert_allclose(res.maps["dvr"][fitted], c[fitted], rtol=1e-5)
        assert res.settings["k2prime_estimate"]["policy"] == "none"
