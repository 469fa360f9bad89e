"""A procedural rhesus-macaque brain phantom: labels, T1-weighted image, label table.

No atlas is downloaded: every structure is a smooth, slightly deformed
ellipsoid placed at a plausible position and size for an adult rhesus
macaque (whole brain about 60 x 80 x 50 mm; Saleem & Logothetis, *A
Combined MRI and Histology Atlas of the Rhesus Monkey Brain*, 2nd ed. 2012,
for the layout). Sizes are rough on purpose; what matters for the simulator
is that small targets (nucleus accumbens, ventral pallidum: a few tens of
mm^3 per side) still hold several voxels of a 2 mm PET grid and suffer the
partial-volume loss they suffer in real data.

Coordinates are RAS millimetres (``+x`` right, ``+y`` anterior, ``+z``
superior), origin near the anterior commissure; the image affine maps voxel
indices to these coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Region names (the ``region`` column of ``dseg.tsv`` and of every table).
REGIONS: tuple[str, ...] = (
    "NAcc", "VP", "caudate", "putamen", "thalamus", "midbrain", "frontal_cortex",
    "occipital_cortex", "other_cortex", "cerebellum", "white_matter", "csf",
)

#: Regions split into left and right labels.
LATERAL: frozenset[str] = frozenset(REGIONS) - {"midbrain", "white_matter", "csf"}

#: Cortical regions (test-retest variability differs from subcortical ones).
CORTICAL: frozenset[str] = frozenset({"frontal_cortex", "occipital_cortex", "other_cortex"})

# Deep structures: (region, centre of the left one (x < 0) in mm, semi-axes in mm).
# Later entries overwrite earlier ones where they overlap.
_DEEP: tuple[tuple[str, tuple[float, float, float], tuple[float, float, float]], ...] = (
    ("thalamus", (-5.5, -6.0, 4.0), (4.5, 7.0, 5.0)),
    ("caudate", (-7.5, 12.0, 9.0), (3.5, 8.0, 4.5)),
    ("putamen", (-13.0, 7.0, 2.0), (3.5, 9.0, 5.0)),
    ("NAcc", (-6.0, 15.5, -2.5), (2.4, 3.0, 2.4)),
    ("VP", (-9.5, 7.5, -6.0), (2.2, 3.0, 2.0)),
)


@dataclass(frozen=True)
class Phantom:
    """A label image with its affine, label table and T1-weighted image.

    Attributes
    ----------
    labels : ndarray of int16, shape (X, Y, Z)
        Label index per voxel, 0 outside the brain.
    affine : ndarray, shape (4, 4)
        Voxel to RAS mm.
    table : list of (int, str, str)
        ``(index, name, region)`` for every label, e.g. ``(1, "NAcc_L", "NAcc")``.
    t1w : ndarray of float32, shape (X, Y, Z)
        Synthetic T1-weighted image (arbitrary units, white matter about 1).
    """

    labels: NDArray[np.int16]
    affine: NDArray[np.float64]
    table: list[tuple[int, str, str]]
    t1w: NDArray[np.float32]

    @property
    def voxel_mm(self) -> float:
        """Voxel edge length in mm."""
        return float(abs(self.affine[0, 0]))

    def region_of(self) -> dict[int, str]:
        """Label index -> region name."""
        return {i: r for i, _, r in self.table}


def label_table() -> list[tuple[int, str, str]]:
    """The label table: ``(index, name, region)``, ``_L``/``_R`` for lateral regions."""
    out: list[tuple[int, str, str]] = []
    i = 1
    for region in REGIONS:
        if region in LATERAL:
            for side in ("L", "R"):
                out.append((i, f"{region}_{side}", region))
                i += 1
        else:
            out.append((i, region, region))
            i += 1
    return out


def _wobble(x: NDArray, y: NDArray, z: NDArray, rng: np.random.Generator,
            amplitude: float) -> NDArray:
    """A smooth random field (a few low-frequency sinusoids) of the given amplitude."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))
    for _ in range(4):
        k = rng.normal(size=3) / 25.0
        out += np.sin(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    return amplitude * out / 2.0


def _inside(x: NDArray, y: NDArray, z: NDArray, centre: tuple[float, float, float],
            axes: tuple[float, float, float], wobble: NDArray | float = 0.0) -> NDArray:
    """Normalised ellipsoidal radius, deformed by ``wobble`` (1 on the surface)."""
    r2 = (((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
          + ((z - centre[2]) / axes[2]) ** 2)
    return np.sqrt(r2) * (1.0 - wobble)


def make_phantom(voxel_mm: float = 1.0, seed: int = 0,
                 fov_mm: tuple[float, float, float] = (80.0, 100.0, 76.0)) -> Phantom:
    """Build the procedural macaque brain.

    Parameters
    ----------
    voxel_mm : float
        Isotropic voxel size in mm (1 mm is the intended resolution; any
        size works, e.g. 2 mm to make the phantom the PET grid itself).
    seed : int
        Seed of the smooth shape deformations and the T1w noise.
    fov_mm : tuple of float
        Field of view (x, y, z) in mm, centred on the brain.

    Returns
    -------
    Phantom
    """
    rng = np.random.default_rng(seed)
    shape = tuple(round(f / voxel_mm) for f in fov_mm)
    origin = np.array([-(n - 1) / 2.0 * voxel_mm for n in shape]) + np.array([0.0, -2.0, 0.0])
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    x = origin[0] + voxel_mm * np.arange(shape[0])[:, None, None]
    y = origin[1] + voxel_mm * np.arange(shape[1])[None, :, None]
    z = origin[2] + voxel_mm * np.arange(shape[2])[None, None, :]
    w = _wobble(x, y, z, rng, 0.04)

    table = label_table()
    idx = {name: i for i, name, _ in table}
    labels = np.zeros(shape, dtype=np.int16)
    left = x < 0

    def put(region: str, mask: NDArray) -> None:
        mask = np.broadcast_to(mask, shape)
        if region in LATERAL:
            labels[mask & left] = idx[f"{region}_L"]
            labels[mask & ~left] = idx[f"{region}_R"]
        else:
            labels[mask] = idx[region]

    # cerebrum and cerebellum, with a CSF rim around them
    r_cer = _inside(x, y, z, (0.0, 6.0, 5.0), (30.0, 34.0, 22.0), w)
    r_cbl = _inside(x, y, z, (0.0, -29.0, -13.0), (20.0, 10.0, 8.5), w)
    head = np.minimum(r_cer, r_cbl * 0.9)
    put("csf", (r_cer < 1.07) | (r_cbl < 1.1))
    put("white_matter", r_cer < 1.0)
    cortex = (r_cer < 1.0) & (r_cer >= 0.88)
    put("other_cortex", cortex)
    put("frontal_cortex", cortex & (y > 14.0))
    put("occipital_cortex", cortex & (y < -16.0))
    put("cerebellum", r_cbl < 1.0)
    put("white_matter", r_cbl < 0.45)
    # lateral ventricles (CSF), then deep nuclei
    for sx in (-1.0, 1.0):
        put("csf", _inside(x, y, z, (4.0 * sx, 3.0, 10.0), (2.0, 11.0, 3.5)) < 1.0)
    put("midbrain", _inside(x, y, z, (0.0, -14.0, -6.0), (5.0, 5.5, 6.0), w) < 1.0)
    for region, (cx, cy, cz), axes in _DEEP:
        for sx in (1.0, -1.0):
            put(region, _inside(x, y, z, (cx * sx, cy, cz), axes, w) < 1.0)

    t1w = _synthetic_t1w(labels, table, head, voxel_mm, rng)
    return Phantom(labels=labels, affine=affine, table=table, t1w=t1w)


#: T1-weighted intensity per region (white matter brightest, CSF dark).
_T1_INTENSITY = {"white_matter": 1.0, "csf": 0.18, "thalamus": 0.8, "midbrain": 0.82,
                 "VP": 0.78}
_T1_GREY = 0.62
_T1_DEEP = 0.72


def _synthetic_t1w(labels: NDArray, table: list[tuple[int, str, str]], head: NDArray,
                   voxel_mm: float, rng: np.random.Generator) -> NDArray[np.float32]:
    """T1-like contrast: tissue intensities, scalp and skull, 1 mm blur, noise."""
    from scipy import ndimage

    lut = np.zeros(max(i for i, _, _ in table) + 1)
    for i, _, region in table:
        if region in _T1_INTENSITY:
            lut[i] = _T1_INTENSITY[region]
        elif region in CORTICAL or region == "cerebellum":
            lut[i] = _T1_GREY
        else:
            lut[i] = _T1_DEEP
    img = lut[labels]
    outside = labels == 0
    img[outside & (head < 1.22)] = 0.08          # skull
    img[outside & (head >= 1.22) & (head < 1.32)] = 0.55  # muscle and scalp
    img = ndimage.gaussian_filter(img, 0.6 / voxel_mm)
    img += 0.02 * rng.standard_normal(img.shape)
    return np.abs(img).astype(np.float32)
