"""Time-activity curves of regions: :class:`TACTable`.

A TAC table holds the frame means of the activity concentration in a set of
regions, with the frame timing and the unit. Inside petbind the unit is
kBq/mL and times are minutes; the pandas form (``to_frame`` / ``from_frame``)
uses the BIDS-derivative columns ``frame_start`` / ``frame_end`` in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, TimingError
from petbind.lazy import lazy_module
from petbind.timing import TIME_TOL_MIN, FrameTiming
from petbind.units import activity_factor

pd = lazy_module("pandas")  # imported on first use: maps need no pandas

#: Column names of the frame edges (seconds) in tables.
FRAME_COLUMNS = ("frame_start", "frame_end")


class TACTable:
    """Regional time-activity curves.

    Parameters
    ----------
    timing : FrameTiming
        Frames of the curves (minutes after injection).
    values : array_like, shape (n_regions, n_frames)
        Frame-mean activity concentration of each region, in ``units``. A 1-D
        array is taken as one region.
    regions : sequence of str
        Region names, one per row of ``values``; unique.
    units : str
        Activity unit of ``values`` (default ``"kBq/mL"``); must be an
        activity concentration known to :func:`petbind.units.activity_factor`.
    metadata : mapping, optional
        Free-form provenance (tracer, isotope, source file ...).
    source : str, optional
        File the table came from, named in errors.

    Raises
    ------
    DataError
        Shape mismatch, duplicate or empty region names.
    UnitsError
        Unknown unit.
    """

    __slots__ = ("metadata", "regions", "source", "timing", "units", "values")

    def __init__(
        self,
        timing: FrameTiming,
        values: ArrayLike,
        regions: Sequence[str],
        units: str = "kBq/mL",
        metadata: Mapping[str, Any] | None = None,
        *,
        source: str | None = None,
    ) -> None:
        if not isinstance(timing, FrameTiming):
            raise TypeError(f"timing must be a FrameTiming, got {type(timing).__name__}")
        vals = np.asarray(values, dtype=float)
        if vals.ndim == 1:
            vals = vals[None, :]
        regions = [str(r) for r in regions]
        if vals.ndim != 2:
            raise DataError(f"values must be (n_regions, n_frames), got shape {vals.shape}",
                            path=source, fix="give one row per region")
        if vals.shape[1] != timing.n_frames:
            raise DataError(
                f"curves have {vals.shape[1]} frames but the timing has {timing.n_frames}",
                path=source, field="frames", fix="give one value per frame for each region",
            )
        if vals.shape[0] != len(regions):
            raise DataError(f"{vals.shape[0]} curves but {len(regions)} region names",
                            path=source, field="regions", fix="name every curve once")
        if any(not r.strip() for r in regions):
            raise DataError("empty region name", path=source, field="regions",
                            fix="give every region a name")
        dup = sorted({r for r in regions if regions.count(r) > 1})
        if dup:
            raise DataError(f"duplicate region names {dup}", path=source, field="regions",
                            fix="make region names unique")
        activity_factor(units, path=source, field="units")
        self.timing = timing
        self.values = vals
        self.regions = regions
        self.units = str(units)
        self.metadata = dict(metadata or {})
        self.source = source

    # -- access ---------------------------------------------------------------
    @property
    def n_regions(self) -> int:
        """Number of regions (rows)."""
        return self.values.shape[0]

    @property
    def n_frames(self) -> int:
        """Number of frames (columns)."""
        return self.values.shape[1]

    def __len__(self) -> int:
        return self.n_regions

    def __repr__(self) -> str:
        return (f"TACTable({self.n_regions} regions x {self.n_frames} frames, "
                f"units={self.units!r}, regions={self.regions[:4]}"
                f"{'...' if self.n_regions > 4 else ''})")

    def curve(self, name: str) -> NDArray[np.float64]:
        """The curve of one region, shape (n_frames,), in :attr:`units`.

        Raises
        ------
        KeyError
            If the region is not in the table (the message lists the regions).
        """
        try:
            i = self.regions.index(name)
        except ValueError:
            raise KeyError(f"region {name!r} not in table; regions: {self.regions}") from None
        return self.values[i]

    def select(self, names: Sequence[str]) -> TACTable:
        """A table with only the named regions, in the given order."""
        idx = []
        for n in names:
            if n not in self.regions:
                raise KeyError(f"region {n!r} not in table; regions: {self.regions}")
            idx.append(self.regions.index(n))
        return TACTable(self.timing, self.values[idx], list(names), self.units,
                        self.metadata, source=self.source)

    def to_units(self, units: str = "kBq/mL") -> TACTable:
        """The same curves expressed in another activity unit."""
        f = activity_factor(self.units) / activity_factor(units)
        return TACTable(self.timing, self.values * f, self.regions, units, self.metadata,
                        source=self.source)

    # -- pandas ---------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per frame: ``frame_start``, ``frame_end`` (seconds), one column per region.

        The unit and metadata travel in ``DataFrame.attrs`` (``"units"``,
        ``"metadata"``).
        """
        data: dict[str, NDArray] = {
            "frame_start": self.timing.start_s,
            "frame_end": self.timing.end * 60.0,
        }
        for name, row in zip(self.regions, self.values, strict=True):
            data[name] = row
        df = pd.DataFrame(data)
        df.attrs["units"] = self.units
        df.attrs["metadata"] = dict(self.metadata)
        return df

    @classmethod
    def from_frame(cls, df: pd.DataFrame, units: str | None = None,
                   metadata: Mapping[str, Any] | None = None, *,
                   source: str | None = None) -> TACTable:
        """Build from a frame with ``frame_start``, ``frame_end`` (seconds) and region columns.

        Parameters
        ----------
        df : pandas.DataFrame
            As written by :meth:`to_frame`; every other column is a region.
        units : str, optional
            Activity unit; defaults to ``df.attrs["units"]``, then ``"kBq/mL"``.
        metadata : mapping, optional
            Defaults to ``df.attrs["metadata"]``.
        source : str, optional
            File name for error messages.

        Raises
        ------
        TimingError
            Missing frame columns, or frames that are not contiguous-or-gapped
            in order (see :class:`FrameTiming`).
        DataError
            Non-numeric cells or no region columns.
        """
        for col in FRAME_COLUMNS:
            if col not in df.columns:
                raise TimingError(f"column '{col}' is missing", path=source, field=col,
                                  fix="give frame_start and frame_end in seconds")
        regions = [str(c) for c in df.columns if c not in FRAME_COLUMNS]
        if not regions:
            raise DataError("no region columns", path=source, field="columns",
                            fix="add one column per region after frame_start, frame_end")
        num = {}
        for col in df.columns:
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            raw = df[col].to_numpy()
            bad = np.flatnonzero(np.isnan(vals) & ~_is_nan_token(raw))
            if bad.size:
                row = int(bad[0])
                err = TimingError if col in FRAME_COLUMNS else DataError
                raise err(f"non-numeric value {raw[row]!r} in row {row + 1}", path=source,
                          field=str(col), fix="every cell must be a number (n/a for missing)")
            num[str(col)] = vals
        start = num["frame_start"]
        end = num["frame_end"]
        if np.any(~np.isfinite(end)):
            i = int(np.flatnonzero(~np.isfinite(end))[0])
            raise TimingError(f"missing frame end in row {i + 1}", path=source,
                              field="frame_end", fix="give every frame an end time")
        timing = FrameTiming(start, end - start, unit="s", source=source,
                             start_field="frame_start", duration_field="frame_end")
        values = np.vstack([num[r] for r in regions])
        u = units if units is not None else df.attrs.get("units", "kBq/mL")
        md = metadata if metadata is not None else df.attrs.get("metadata", {})
        return cls(timing, values, regions, u, md, source=source)


def _is_nan_token(raw: NDArray) -> NDArray[np.bool_]:
    """True where a cell is a legitimate missing value (NaN, empty, 'n/a')."""
    out = np.zeros(raw.shape, dtype=bool)
    for i, v in enumerate(raw):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[i] = True
        elif isinstance(v, str) and v.strip().lower() in ("", "n/a", "nan", "na"):
            out[i] = True
    return out


def timing_close(a: FrameTiming, b: FrameTiming, tol_min: float = TIME_TOL_MIN) -> bool:
    """True when two timings have the same frames within ``tol_min`` minutes."""
    return (a.n_frames == b.n_frames
            and bool(np.all(np.abs(a.start - b.start) <= tol_min))
            and bool(np.all(np.abs(a.end - b.end) <= tol_min)))
