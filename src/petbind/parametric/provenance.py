"""Provenance and writing of parametric maps: input hashes, BIDS-derivative maps and sidecars."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from petbind import __version__
from petbind.compute import usable_cpus
from petbind.errors import PetbindError
from petbind.models.catalogue import parameter_units
from petbind.parametric.result import ParametricResult


def _sha256(path: str | os.PathLike) -> str:
    from petbind.io.files import sha256_file

    return sha256_file(path)


def _hash_inputs(paths: list[str | None], known: Mapping[str, str] | None = None
                 ) -> dict[str, str]:
    out: dict[str, str] = dict(known or {})
    for p in paths:
        if p is None or p in out or not Path(p).is_file():
            continue
        out[p] = _sha256(p)
        for side in (Path(p.removesuffix(".gz").removesuffix(".nii") + ".json"),):
            if side.is_file() and str(side) != p:
                out[str(side)] = _sha256(side)
    return out


def _background(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` started in a thread; ``.result()`` waits for it (hashlib and the gzip
    back-ends release the GIL, so this overlaps with work in the calling thread)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="petbind-io")
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------
#: Units of the parameters a map can hold (written in the sidecars; from the catalogue).
PARAM_UNITS = parameter_units()


def write_maps(
    result: ParametricResult,
    out_dir: str | os.PathLike,
    stem: str,
    sidecar_extra: Mapping[str, Any] | None = None,
    *,
    entity: str = "desc",
) -> list[Path]:
    """Write a :class:`ParametricResult` as BIDS-derivative NIfTI maps with sidecars.

    Files, in ``out_dir`` (created; written atomically, float32):

    - ``<stem>_<entity>-<model>_<param>.nii.gz`` for every parameter, the name
      without underscores (``bp_nd`` -> ``bpnd``, ``r1``, ``k2`` ...);
    - ``<stem>_<entity>-<model>_<param>se.nii.gz`` for each standard error;
    - ``<stem>_<entity>-<model>_mask.nii.gz`` (uint8, 1 = fitted and valid);

    each with a JSON sidecar holding the model, parameter, units, every
    setting, k2' and how it was obtained, the reference curve, voxel counts,
    the software version and the SHA-256 of the inputs.

    Parameters
    ----------
    result : ParametricResult
    out_dir : path
        Output folder (never the input folder).
    stem : str
        BIDS stem, e.g. ``sub-01_ses-baseline_trc-AZ10419369``.
    sidecar_extra : mapping, optional
        Extra keys for every sidecar (e.g. the pipeline's provenance).
    entity : str
        ``"desc"`` (default, ``petbind parametric``) or ``"model"`` (the
        pipeline's layout in docs/outputs.md).

    Returns
    -------
    list of Path
        The NIfTI files written.
    """
    from petbind.io.bids import save_image

    out = Path(out_dir)
    for p in result.inputs:
        if out.resolve() == Path(p).resolve().parent:
            raise PetbindError("refusing to write maps into the input folder", path=out,
                               field="--out", fix="choose another output folder")
    base = {
        "Description": f"Voxelwise {result.model.upper()} fit (petbind.parametric)",
        "Model": result.model,
        "SoftwareName": "petbind", "SoftwareVersion": __version__,
        "K2Prime": result.k2prime, "K2PrimeUnits": "1/min",
        "K2PrimeSource": result.settings.get("k2prime_estimate", {}),
        "Settings": result.settings,
        "ReferenceTAC": [float(x) for x in result.ref_tac], "ReferenceTACUnits": "kBq/mL",
        **result.timing.to_bids(),
        "VoxelCounts": result.counts,
        "InputHashes": {k: f"sha256:{v}" for k, v in result.inputs.items()},
        "Sources": list(result.inputs),
        **dict(sidecar_extra or {}),
    }
    jobs: list[tuple[Path, Any, dict[str, Any]]] = []
    pre = f"{stem}_{entity}-{result.model}"
    for name, vol in result.maps.items():
        tag = name.replace("_", "")
        side = {**base, "Parameter": name, "Units": PARAM_UNITS.get(name, "see model docs")}
        jobs.append((out / f"{pre}_{tag}.nii.gz", vol, side))
    for name, vol in result.se.items():
        tag = name.replace("_", "")
        side = {**base, "Parameter": f"{name}_se", "Statistic": "standard error",
                "Units": PARAM_UNITS.get(name, "see model docs")}
        jobs.append((out / f"{pre}_{tag}se.nii.gz", vol, side))
    side = {**base, "Parameter": "valid", "Units": "1 = fitted and valid, 0 = not"}
    jobs.append((out / f"{pre}_mask.nii.gz", result.valid.astype(np.uint8), side))
    # one file per thread: compression releases the GIL, so the maps are written in
    # parallel (each atomically; the files and their bytes do not depend on the order)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), usable_cpus())),
                            thread_name_prefix="petbind-write") as pool:
        written = list(pool.map(lambda j: save_image(j[0], j[1], result.affine, j[2]), jobs))
    return [Path(p) for p in written]
