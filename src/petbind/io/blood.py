"""BIDS-PET blood recordings: ``*_recording-<label>_blood.tsv`` + JSON sidecar.

BIDS 1.11 ("Blood recording data"): column ``time`` (s, relative to
``TimeZero`` of the PET sidecar) and, as available,
``whole_blood_radioactivity``, ``plasma_radioactivity`` (activity
concentration, unit in the sidecar's column description) and
``metabolite_parent_fraction`` (unitless, 0..1). The sidecar states
``PlasmaAvail``, ``WholeBloodAvail``, ``MetaboliteAvail`` and describes each
column with ``Units``. The recording label is typically ``manual`` or
``autosampler``.

:func:`read_blood` returns times in minutes after injection and activities
in kBq/mL, as the models expect. Values are returned as recorded: BIDS does
not define a decay-correction flag for blood data; the sidecar's
``DecayCorrected`` (if any) is kept in ``metadata``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.errors import DataError, MetadataError, TimingError, UnitsError
from petbind.io.atomic import atomic_path, write_json_atomic
from petbind.io.boundary import file_reader
from petbind.io.tables import read_json, read_tsv, sidecar_path
from petbind.io.verify import check_activity_range
from petbind.units import activity_factor, time_factor

RADIOACTIVITY_COLUMNS = ("whole_blood_radioactivity", "plasma_radioactivity")
FRACTION_COLUMNS = ("metabolite_parent_fraction", "metabolite_polar_fraction",
                    "hplc_recovery_fractions")
AVAIL_FLAGS = {"whole_blood_radioactivity": "WholeBloodAvail",
               "plasma_radioactivity": "PlasmaAvail",
               "metabolite_parent_fraction": "MetaboliteAvail"}


@dataclass
class BloodRecording:
    """One blood recording (manual samples or an autosampler run).

    Attributes
    ----------
    recording : str
        The BIDS ``recording-`` label (``"manual"``, ``"autosampler"`` ...).
    time : ndarray, shape (K,)
        Sample times, minutes after injection, non-decreasing.
    columns : dict of str -> ndarray, shape (K,)
        Radioactivity columns in kBq/mL; fraction columns unitless (0..1);
        NaN where a sample has no value (``n/a``).
    metadata : dict
        Sidecar fields (flags, method) and ``source_units``.
    path : str, optional
        The TSV file.
    """

    recording: str
    time: NDArray[np.float64]
    columns: dict[str, NDArray[np.float64]]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __getitem__(self, name: str) -> NDArray[np.float64]:
        return self.columns[name]

    @property
    def whole_blood(self) -> NDArray[np.float64] | None:
        """Whole-blood activity (kBq/mL) or None."""
        return self.columns.get("whole_blood_radioactivity")

    @property
    def plasma(self) -> NDArray[np.float64] | None:
        """Plasma activity (kBq/mL) or None."""
        return self.columns.get("plasma_radioactivity")

    @property
    def parent_fraction(self) -> NDArray[np.float64] | None:
        """Unmetabolised parent fraction (0..1) or None."""
        return self.columns.get("metabolite_parent_fraction")


def _recording_label(path: Path) -> str:
    m = re.search(r"_recording-([A-Za-z0-9]+)_", path.name)
    return m.group(1) if m else "unknown"


def _injection_start(path: Path) -> float | None:
    """InjectionStart (s) of the PET sidecar(s) of the same scan, if found.

    The PET image of the scan is the ``*_pet.nii[.gz]`` in the same folder whose
    name starts like the recording's; its sidecar fields are merged by the BIDS
    inheritance principle. A lone ``*_pet.json`` is used when there is no image.
    """
    from petbind.io.bids import read_pet_sidecar

    prefix = path.name.split("_recording-")[0]
    images = sorted(p for p in path.parent.glob(prefix + "*_pet.nii*")
                    if p.name.endswith((".nii", ".nii.gz")))
    sources = [(read_pet_sidecar, im) for im in images] or [
        (lambda j: (read_json(j), j), j) for j in sorted(path.parent.glob(prefix + "*_pet.json"))]
    for reader, src in sources:
        try:
            v = reader(src)[0].get("InjectionStart")
        except Exception:  # a broken PET sidecar is reported by validate, not here
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


@file_reader
def read_blood(path: str | os.PathLike, *, injection_start_s: float | None = None
               ) -> BloodRecording:
    """Read a BIDS blood recording.

    Parameters
    ----------
    path : str or PathLike
        ``*_blood.tsv``; its JSON sidecar must give the units of each column.
    injection_start_s : float, optional
        Injection time in s relative to ``TimeZero``. Default: the
        ``InjectionStart`` of the PET sidecar of the same scan in the same
        folder, else 0 (noted in ``metadata["injection_start_source"]``).

    Returns
    -------
    BloodRecording

    Raises
    ------
    FileFormatError, MetadataError, UnitsError, TimingError, DataError
        Unreadable files, missing ``time`` column or units, non-numeric cells,
        decreasing times, fractions outside 0..1, negative radioactivity.
    """
    p = Path(path)
    side_p = sidecar_path(p)
    df = read_tsv(p)
    side = read_json(side_p)
    if "time" not in df.columns:
        raise TimingError("column 'time' is missing", path=p, field="time",
                          fix="add a 'time' column (s, relative to TimeZero)")
    known = ("time", *RADIOACTIVITY_COLUMNS, *FRACTION_COLUMNS)
    values: dict[str, NDArray[np.float64]] = {}
    units: dict[str, str] = {}
    for col in df.columns:
        num = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        raw = df[col].to_numpy()
        bad = [i for i in np.flatnonzero(np.isnan(num))
               if str(raw[i]).strip().lower() not in ("n/a", "nan", "")]
        if bad:
            raise DataError(f"non-numeric value {raw[bad[0]]!r} in row {bad[0] + 1}", path=p,
                            field=str(col), fix="every cell must be a number or n/a")
        desc = side.get(col)
        unit = desc.get("Units") if isinstance(desc, dict) else None
        if col in known and col not in FRACTION_COLUMNS and unit is None:
            raise MetadataError(f"the sidecar gives no Units for column '{col}'", path=side_p,
                                field=f"{col}.Units",
                                fix=f'add "{col}": {{"Units": "..."}} to the sidecar')
        if unit is not None:
            units[col] = str(unit)
        values[str(col)] = num
    t = values.pop("time")
    if np.any(np.isnan(t)):
        raise TimingError(f"missing time in row {int(np.flatnonzero(np.isnan(t))[0]) + 1}",
                          path=p, field="time", fix="every sample needs a time")
    t_min = t * time_factor(units["time"], path=side_p, field="time.Units")
    dec = np.flatnonzero(np.diff(t_min) < 0)
    if dec.size:
        raise TimingError(f"sample times decrease at row {int(dec[0]) + 2}", path=p,
                          field="time", fix="sort samples by time")
    inj = injection_start_s
    source = "argument"
    if inj is None:
        inj = _injection_start(p)
        source = "PET sidecar" if inj is not None else "assumed 0 (no PET sidecar found)"
        inj = 0.0 if inj is None else inj
    t_min = t_min - inj / 60.0
    cols: dict[str, NDArray[np.float64]] = {}
    for col, v in values.items():
        if col in FRACTION_COLUMNS or units.get(col, "").lower() in ("unitless", "fraction",
                                                                      "arbitrary"):
            ok = v[~np.isnan(v)]
            if np.any((ok < 0) | (ok > 1)):
                raise DataError(f"fraction outside 0..1 (max {ok.max():g})", path=p,
                                field=col, fix="give fractions, not percentages")
            cols[col] = v
            continue
        if col not in units:
            cols[col] = v
            continue
        try:
            f = activity_factor(units[col], path=side_p, field=f"{col}.Units")
        except UnitsError:
            if col in RADIOACTIVITY_COLUMNS:
                raise
            cols[col] = v
            continue
        if np.any(v[~np.isnan(v)] < 0):
            raise DataError("negative radioactivity", path=p, field=col,
                            fix="check the well-counter data")
        check_activity_range(v * f, p, col)
        if col in RADIOACTIVITY_COLUMNS and not np.any(v[~np.isnan(v)] > 0):
            raise DataError("every value is 0 (or n/a): no input function can be made", path=p,
                            field=col, fix="check the well-counter export, or drop the column "
                            "and its Avail flag")
        cols[col] = v * f
    for col, flag in AVAIL_FLAGS.items():
        if side.get(flag) is True and col not in cols:
            raise MetadataError(f"{flag} is true but column '{col}' is missing", path=side_p,
                                field=flag, fix=f"add '{col}' or set {flag} to false")
    md = {k: v for k, v in side.items() if not isinstance(v, dict)}
    md["source_units"] = units
    md["injection_start_source"] = source
    return BloodRecording(_recording_label(p), t_min, cols, md, str(p))


def write_blood(path: str | os.PathLike, rec: BloodRecording, *,
                injection_start_s: float = 0.0) -> Path:
    """Write a recording as BIDS ``*_blood.tsv`` + JSON (s, kBq/mL), atomically.

    ``injection_start_s`` (s after TimeZero) is added back to the times.
    """
    p = Path(path)
    data = {"time": rec.time * 60.0 + injection_start_s, **rec.columns}
    df = pd.DataFrame(data)
    text = df.to_csv(sep="\t", index=False, na_rep="n/a", float_format="%.15g",
                     lineterminator="\n")
    side: dict[str, Any] = {k: v for k, v in rec.metadata.items()
                            if k not in ("source_units", "injection_start_source")}
    side["time"] = {"Description": "time relative to TimeZero", "Units": "s"}
    for col in rec.columns:
        unit = "unitless" if col in FRACTION_COLUMNS else "kBq/mL"
        side[col] = {"Description": col.replace("_", " "), "Units": unit}
    for col, flag in AVAIL_FLAGS.items():
        side.setdefault(flag, col in rec.columns)
    with atomic_path(sidecar_path(p)) as tj, atomic_path(p) as tt:
        write_json_atomic(tj, side)
        tt.write_text(text, encoding="utf-8")
    return p
