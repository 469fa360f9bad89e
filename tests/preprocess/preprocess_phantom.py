"""An analytic, independent test phantom for the preprocessing tests.

Structures are ellipsoids defined in world (RAS, mm) coordinates, so an image of
the head moved by any rigid (or smooth non-linear) map is computed *exactly*
by evaluating the phantom at the back-mapped points, without using any
resampling code under test. Kinetic curves come from closed-form
one-tissue-compartment solutions with a tri-exponential plasma input, frame
averaged on a fine grid.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# name, centre (mm), radii (mm); later entries overwrite earlier ones
STRUCTURES = [
    ("other_cortex", (0.0, 0.0, 0.0), (27.0, 33.0, 22.0)),
    ("white_matter", (0.0, -2.0, 3.0), (19.0, 24.0, 13.0)),
    ("frontal_cortex", (6.0, 22.0, 8.0), (12.0, 8.0, 8.0)),
    ("caudate_L", (-6.0, 8.0, 5.0), (4.0, 6.5, 5.0)),
    ("caudate_R", (6.0, 8.0, 5.0), (4.0, 6.5, 5.0)),
    ("putamen_L", (-14.0, 3.0, 0.0), (4.0, 8.0, 6.0)),
    ("putamen_R", (14.0, 3.0, 0.0), (4.0, 8.0, 6.0)),
    ("thalamus", (0.0, -8.0, 2.0), (8.0, 6.0, 5.0)),
    ("cerebellum", (0.0, -25.0, -13.0), (19.0, 9.0, 8.0)),
]
NAMES = [s[0] for s in STRUCTURES]
INDEX = {n: i + 1 for i, n in enumerate(NAMES)}
# T1w-like contrast: cortex/grey 0.55, white 1.0, deep grey 0.7
T1_VALUE = {"other_cortex": 0.55, "white_matter": 1.0, "frontal_cortex": 0.5,
            "caudate_L": 0.7, "caudate_R": 0.7, "putamen_L": 0.72, "putamen_R": 0.72,
            "thalamus": 0.8, "cerebellum": 0.6}


def grid_affine(shape, voxel_mm):
    """RAS affine with the grid centred on the world origin."""
    a = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    a[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2.0
    return a


def labels_at(points):
    """Label index of world points (N, 3); 0 outside the head."""
    lab = np.zeros(points.shape[0], dtype=np.int32)
    for i, (_, c, r) in enumerate(STRUCTURES):
        inside = np.sum(((points - np.asarray(c)) / np.asarray(r)) ** 2, axis=1) <= 1.0
        lab[inside] = i + 1
    return lab


def grid_points(shape, affine, sub=1):
    """World points of a grid, ``sub**3`` sub-samples per voxel: (prod(shape), sub**3, 3)."""
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    o = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    sub_ijk = ijk[:, None, :] + o[None, :, :]
    return sub_ijk @ affine[:3, :3].T + affine[:3, 3]


def fractions(shape, affine, inverse_map=None, sub=2):
    """Partial-volume fraction of each label per voxel: (n_labels + 1, *shape).

    ``inverse_map(points) -> points`` maps image-space points back into the
    phantom's own space (the inverse of the head motion).
    """
    pts = grid_points(shape, affine, sub)
    flat = pts.reshape(-1, 3)
    if inverse_map is not None:
        flat = inverse_map(flat)
    lab = labels_at(flat).reshape(pts.shape[:2])
    n = len(STRUCTURES) + 1
    frac = np.stack([(lab == k).mean(axis=1) for k in range(n)])
    return frac.reshape((n, *shape))


def rot(angles_deg):
    """R = Rz Ry Rx (extrinsic x, y, z), written out independently of petbind."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid(params, center=(0.0, 0.0, 0.0)):
    """4x4: x -> R (x - c) + c + t."""
    r = rot(params[3:])
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(params[:3]) + c - r @ c
    return m


def apply(m, pts):
    return pts @ m[:3, :3].T + m[:3, 3]


# ---------------------------------------------------------------- kinetics

FRAMES_S = [(4, 15), (4, 60), (4, 120), (4, 300), (6, 600)]  # 20 frames, 90 min


def frame_schedule():
    d = np.concatenate([[dur] * n for n, dur in FRAMES_S]).astype(float)
    start = np.concatenate([[0.0], np.cumsum(d)[:-1]])
    return start / 60.0, d / 60.0


def one_tissue(t, k1, k2):
    """1TCM tissue curve for Cp = sum a_i exp(-l_i t) (l_3 term makes Cp(0) = 0)."""
    amps = np.array([60.0, 8.0, 2.0, -70.0])
    lams = np.array([4.0, 0.4, 0.02, 8.0])
    out = np.zeros_like(t)
    for a, lam in zip(amps, lams, strict=True):
        out += a * (np.exp(-lam * t) - np.exp(-k2 * t)) / (k2 - lam)
    return k1 * out


def region_curves(start, dur):
    """Frame-mean curves per label (index 0 = background = 0).

    Reference (cerebellum): K1 = 0.3, k2 = 0.15; targets have K1 = R1 K1',
    the same K1/k2 = 2 (V_ND) and apparent k2a = k2 / (1 + BP_ND).
    """
    bp = {"other_cortex": 0.6, "white_matter": 0.15, "frontal_cortex": 1.0, "caudate_L": 2.5,
          "caudate_R": 2.5, "putamen_L": 3.0, "putamen_R": 3.0, "thalamus": 1.5,
          "cerebellum": 0.0}
    # relative delivery R1 = K1 / K1' (white matter has about half the flow of grey)
    r1 = {"other_cortex": 1.0, "white_matter": 0.5, "frontal_cortex": 1.1, "caudate_L": 1.1,
          "caudate_R": 1.1, "putamen_L": 1.15, "putamen_R": 1.15, "thalamus": 1.25,
          "cerebellum": 1.0}
    t = np.linspace(0.0, (start[-1] + dur[-1]), 20001)
    curves = np.zeros((len(STRUCTURES) + 1, len(start)))
    for i, name in enumerate(NAMES):
        y = one_tissue(t, 0.3 * r1[name], 0.15 * r1[name] / (1.0 + bp[name]))
        for f, (s, d) in enumerate(zip(start, dur, strict=True)):
            sel = (t >= s) & (t <= s + d)
            curves[i + 1, f] = np.trapezoid(y[sel], t[sel]) / (t[sel][-1] - t[sel][0])
    return curves, bp


def logan_ref_dvr(target, ref, start, dur, k2ref=0.15, t_star=30.0):
    """Logan reference-tissue plot DVR (Logan et al. 1996), trapezoid integrals.

    ``int C_T / C_T = DVR (int C_R + C_R / k2') / C_T + b`` for ``t >= t_star``.
    """
    mid = start + dur / 2.0
    tt = np.concatenate([[0.0], mid])

    def cum(y):
        yy = np.concatenate([np.zeros(y.shape[:-1] + (1,)), y], axis=-1)
        return np.cumsum((yy[..., 1:] + yy[..., :-1]) / 2.0 * np.diff(tt), axis=-1)

    sel = mid >= t_star
    x = (cum(ref)[sel] + ref[sel] / k2ref) / target[..., sel]
    y = cum(target)[..., sel] / target[..., sel]
    xm = x - x.mean(axis=-1, keepdims=True)
    ym = y - y.mean(axis=-1, keepdims=True)
    return np.sum(xm * ym, axis=-1) / np.sum(xm * xm, axis=-1)


def make_dynamic(shape, affine, motion_params, center, *, seed=0, noise=0.04, fwhm_mm=4.0,
                 base=None):
    """Dynamic PET (X, Y, Z, T) of the phantom moved per frame by ``motion_params`` (T, 6).

    The head in frame t is the phantom mapped by ``rigid(motion_params[t], center)``;
    the image value at y is the phantom's at the inverse-mapped point. ``base``
    (4x4) places the still head first (a subject's native position). Gaussian
    noise with SD ``noise * value / sqrt(duration / 5 min)`` mimics counts.
    """
    start, dur = frame_schedule()
    curves, bp = region_curves(start, dur)
    rng = np.random.default_rng(seed)
    sigma = fwhm_mm / 2.3548 / affine[0, 0]
    out = np.empty((*shape, len(start)), np.float32)
    cache = {}
    for f in range(len(start)):
        key = tuple(np.round(motion_params[f], 6))
        if key not in cache:
            pose = rigid(motion_params[f], center) @ (np.eye(4) if base is None else base)
            minv = np.linalg.inv(pose)
            cache[key] = fractions(shape, affine, lambda p, m=minv: apply(m, p))
        img = np.tensordot(curves[:, f], cache[key], axes=1)
        img = gaussian_filter(img, sigma)
        sd = noise * np.maximum(img, 0.05 * img.max()) / np.sqrt(dur[f] / 5.0)
        out[..., f] = img + sd * rng.standard_normal(img.shape)
    return out, start, dur, curves, bp


def shared_once(tmp_path_factory, name, build):
    """Build an expensive fixture once per test run, even across pytest-xdist workers.

    The first worker builds it (``build(folder)``) under a lock and pickles the
    result into the run's shared temporary folder; the others load it (the
    pytest-xdist recipe for session fixtures, with ``fcntl`` instead of filelock).
    """
    import fcntl
    import os
    import pickle

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / "result.pkl"
        if done.exists():
            return pickle.loads(done.read_bytes())
        folder.mkdir(exist_ok=True)
        result = build(folder)
        done.write_bytes(pickle.dumps(result))
        return result


def pet_sidecar(start_min, dur_min, tracer="AZ10419369"):
    """A complete BIDS-PET sidecar for frames starting at ``start_min`` lasting ``dur_min``."""
    return {"Units": "kBq/mL", "TracerName": tracer, "TracerRadionuclide": "C11",
            "InjectedRadioactivity": 150.0, "InjectedRadioactivityUnits": "MBq",
            "ModeOfAdministration": "bolus", "TimeZero": "12:00:00", "ScanStart": 0,
            "InjectionStart": 0, "FrameTimesStart": (start_min * 60).tolist(),
            "FrameDuration": (dur_min * 60).tolist(), "ImageDecayCorrected": True,
            "ImageDecayCorrectionTime": 0, "AttenuationCorrection": "simulated",
            "ReconMethodName": "simulated", "ReconMethodParameterLabels": ["none"],
            "ReconMethodParameterUnits": ["none"], "ReconMethodParameterValues": [0],
            "ReconFilterType": "none", "ReconFilterSize": 0, "AcquisitionMode": "list mode",
            "BodyPart": "Brain", "Manufacturer": "sim", "ManufacturersModelName": "sim"}
