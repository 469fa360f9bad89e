"""Frame timing of a dynamic PET scan, decay correction and frame integration.

Units: inside petbind every time is in **minutes** and every rate in 1/min
(the literature's units). Files store seconds (BIDS); the conversion happens
only in the constructors :meth:`FrameTiming.from_seconds` /
``FrameTiming(..., unit="s")`` and in :meth:`FrameTiming.to_bids`.

Decay correction uses the exact frame-integrated factor. For a frame
``[a, b]`` of duration ``d = b - a`` and decay constant ``lam`` the mean of the
physically decaying activity of a constant source ``A`` is
``A (exp(-lam a) - exp(-lam b)) / (lam d)``, so the factor that corrects a
frame mean to time ``t_ref`` is::

    DF = lam d exp(lam (a - t_ref)) / (1 - exp(-lam d))

(e.g. Turku PET Centre, "Correction for physical decay",
https://www.turkupetcentre.net/petanalysis/decay.html).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import TimingError
from petbind.isotopes import Isotope, get_isotope

#: Tolerance (minutes) when checking overlaps and gaps between frames (about 6 ms).
TIME_TOL_MIN = 1e-4


def _as_1d(values: ArrayLike, name: str, source: str | None) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TimingError(
            f"{name} must be numbers, got {values!r}", path=source, field=name,
            fix="give one number per frame",
        ) from exc
    if arr.ndim != 1:
        raise TimingError(f"{name} must be a 1-D list, got shape {arr.shape}",
                          path=source, field=name, fix="give one number per frame")
    return arr


class FrameTiming:
    """Start times and durations of the frames of a dynamic scan.

    Parameters
    ----------
    start : array_like
        Frame start times, relative to injection, in ``unit``.
    duration : array_like
        Frame durations in ``unit``.
    unit : {"s", "min"}
        Unit of ``start`` and ``duration``. Required: there is no default, so
        a unit mistake cannot pass silently.
    source : str, optional
        File the timing came from; named in error messages.
    start_field, duration_field : str
        Names of the fields in the source file, for error messages.

    Raises
    ------
    TimingError
        No frames, lengths differ, non-finite values, non-positive durations,
        starts that decrease, or frames that overlap. Gaps are allowed and
        reported by :meth:`gaps`.
    """

    __slots__ = ("_duration", "_start", "source")

    def __init__(
        self,
        start: ArrayLike,
        duration: ArrayLike,
        *,
        unit: Literal["s", "min"],
        source: str | None = None,
        start_field: str = "FrameTimesStart",
        duration_field: str = "FrameDuration",
    ) -> None:
        if unit not in ("s", "min"):
            raise TimingError(f"unit must be 's' or 'min', got {unit!r}", path=source,
                              field="unit", fix="say unit='s' for BIDS files")
        s = _as_1d(start, start_field, source)
        d = _as_1d(duration, duration_field, source)
        if s.size == 0:
            raise TimingError("no frames", path=source, field=start_field,
                              fix="list at least one frame")
        if s.size != d.size:
            raise TimingError(
                f"{s.size} frame starts but {d.size} durations", path=source,
                field=duration_field, fix=f"give {start_field} and {duration_field} one "
                "entry per frame",
            )
        for arr, name in ((s, start_field), (d, duration_field)):
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise TimingError(f"non-finite value at frame {bad[0]}", path=source,
                                  field=name, fix="replace NaN/inf with the real time")
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            raise TimingError(
                f"frame {bad[0]} has duration {d[bad[0]]:g} {unit}; durations must be > 0",
                path=source, field=duration_field, fix="check the frame definition",
            )
        scale = 1.0 / 60.0 if unit == "s" else 1.0
        s = s * scale
        d = d * scale
        if np.any(s < -TIME_TOL_MIN):
            i = int(np.flatnonzero(s < -TIME_TOL_MIN)[0])
            raise TimingError(
                f"frame {i} starts before injection ({s[i] / scale:g} {unit})",
                path=source, field=start_field,
                fix="times must be relative to injection; shift by InjectionStart",
            )
        dec = np.flatnonzero(np.diff(s) < 0)
        if dec.size:
            i = int(dec[0]) + 1
            raise TimingError(f"frame starts decrease at frame {i}", path=source,
                              field=start_field, fix="sort frames by start time")
        overlap = np.flatnonzero(s[1:] < s[:-1] + d[:-1] - TIME_TOL_MIN)
        if overlap.size:
            i = int(overlap[0])
            raise TimingError(
                f"frame {i} (ends {(s[i] + d[i]) / scale:g} {unit}) overlaps frame {i + 1} "
                f"(starts {s[i + 1] / scale:g} {unit})",
                path=source, field=duration_field,
                fix="check durations; frames must not overlap",
            )
        s.setflags(write=False)
        d.setflags(write=False)
        self._start = s
        self._duration = d
        self.source = source

    # -- constructors ---------------------------------------------------------
    @classmethod
    def from_seconds(cls, start: ArrayLike, duration: ArrayLike, **kw) -> FrameTiming:
        """Build from starts and durations in seconds (BIDS convention)."""
        return cls(start, duration, unit="s", **kw)

    @classmethod
    def from_minutes(cls, start: ArrayLike, duration: ArrayLike, **kw) -> FrameTiming:
        """Build from starts and durations in minutes."""
        return cls(start, duration, unit="min", **kw)

    @classmethod
    def from_durations(
        cls, durations: Sequence[float] | ArrayLike, *, unit: Literal["s", "min"],
        start: float = 0.0,
    ) -> FrameTiming:
        """Contiguous frames from a list of durations (e.g. ``[10]*6 + [20]*3``)."""
        d = np.asarray(durations, dtype=float)
        s = start + np.concatenate([[0.0], np.cumsum(d)[:-1]])
        return cls(s, d, unit=unit)

    @classmethod
    def from_schedule(
        cls, schedule: Sequence[tuple[int, float]], *, unit: Literal["s", "min"] = "s"
    ) -> FrameTiming:
        """Contiguous frames from ``[(count, duration), ...]``, e.g. ``[(6, 10), (3, 20)]``."""
        durations: list[float] = []
        for count, dur in schedule:
            durations.extend([float(dur)] * int(count))
        return cls.from_durations(durations, unit=unit)

    # -- values (minutes) -----------------------------------------------------
    @property
    def start(self) -> NDArray[np.float64]:
        """Frame start times in minutes after injection."""
        return self._start

    @property
    def duration(self) -> NDArray[np.float64]:
        """Frame durations in minutes."""
        return self._duration

    @property
    def end(self) -> NDArray[np.float64]:
        """Frame end times in minutes."""
        return self._start + self._duration

    @property
    def mid(self) -> NDArray[np.float64]:
        """Frame mid times in minutes (arithmetic middle of each frame)."""
        return self._start + 0.5 * self._duration

    @property
    def start_s(self) -> NDArray[np.float64]:
        """Frame start times in seconds."""
        return self._start * 60.0

    @property
    def duration_s(self) -> NDArray[np.float64]:
        """Frame durations in seconds."""
        return self._duration * 60.0

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self._start.size)

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return (f"FrameTiming(n_frames={self.n_frames}, start={self._start[0]:.4g} min, "
                f"end={self.end[-1]:.4g} min)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameTiming):
            return NotImplemented
        return (self.n_frames == other.n_frames
                and np.allclose(self._start, other._start, rtol=0, atol=1e-9)
                and np.allclose(self._duration, other._duration, rtol=0, atol=1e-9))

    __hash__ = None  # type: ignore[assignment]

    # -- structure ------------------------------------------------------------
    def gaps(self) -> list[tuple[int, float]]:
        """Gaps between consecutive frames.

        Returns
        -------
        list of (int, float)
            ``(i, gap_min)`` for each gap after frame ``i`` longer than
            :data:`TIME_TOL_MIN`; also ``(-1, start0)`` when the first frame
            starts after injection.
        """
        out: list[tuple[int, float]] = []
        if self._start[0] > TIME_TOL_MIN:
            out.append((-1, float(self._start[0])))
        g = self._start[1:] - self.end[:-1]
        for i in np.flatnonzero(g > TIME_TOL_MIN):
            out.append((int(i), float(g[i])))
        return out

    def window(self, start: float | None = None, end: float | None = None) -> NDArray[np.bool_]:
        """Frames lying wholly inside ``[start, end]`` (minutes); ``None`` means open."""
        m = np.ones(self.n_frames, dtype=bool)
        if start is not None:
            m &= self._start >= start - TIME_TOL_MIN
        if end is not None:
            m &= self.end <= end + TIME_TOL_MIN
        return m

    def subset(self, frames: ArrayLike) -> FrameTiming:
        """A new timing with the selected frames (boolean mask or indices)."""
        idx = np.asarray(frames)
        return FrameTiming(self._start[idx], self._duration[idx], unit="min",
                           source=self.source)

    def shifted(self, offset_min: float) -> FrameTiming:
        """The same frames with ``offset_min`` minutes added to every start."""
        return FrameTiming(self._start + offset_min, self._duration, unit="min",
                           source=self.source)

    def to_bids(self) -> dict[str, list[float]]:
        """``{"FrameTimesStart": [...], "FrameDuration": [...]}`` in seconds."""
        return {"FrameTimesStart": [float(x) for x in np.round(self.start_s, 9)],
                "FrameDuration": [float(x) for x in np.round(self.duration_s, 9)]}

    # -- decay ----------------------------------------------------------------
    def decay_factors(self, isotope: Isotope | str, ref_time_min: float = 0.0) -> NDArray:
        """Exact frame-integrated decay-correction factors.

        Multiplying a frame mean of un-corrected activity by these factors gives
        the frame mean of activity decay-corrected to ``ref_time_min``.

        Parameters
        ----------
        isotope : Isotope or str
            Radionuclide.
        ref_time_min : float
            Time, in minutes after injection, to which activity is corrected.

        Returns
        -------
        ndarray, shape (n_frames,)
            ``lam d exp(lam (a - t_ref)) / (1 - exp(-lam d))``.
        """
        iso = get_isotope(isotope) if isinstance(isotope, str) else isotope
        lam = iso.decay_constant_per_min
        x = lam * self._duration
        return x * np.exp(lam * (self._start - ref_time_min)) / -np.expm1(-x)

    def decay_correct(self, data: ArrayLike, isotope: Isotope | str,
                      ref_time_min: float = 0.0) -> NDArray:
        """Decay-correct frame means (last axis = frames) to ``ref_time_min``."""
        return np.asarray(data) * self.decay_factors(isotope, ref_time_min)

    def decay_uncorrect(self, data: ArrayLike, isotope: Isotope | str,
                        ref_time_min: float = 0.0) -> NDArray:
        """Undo :meth:`decay_correct`: frame means of physically decaying activity."""
        return np.asarray(data) / self.decay_factors(isotope, ref_time_min)

    # -- integration ----------------------------------------------------------
    def frame_means(self, t: ArrayLike, y: ArrayLike) -> NDArray:
        """Frame means of a densely sampled curve, by trapezoidal integration.

        Parameters
        ----------
        t : array_like, shape (K,)
            Increasing sample times in minutes; must cover every frame.
        y : array_like, shape (..., K)
            Curve values at ``t`` (any leading batch shape).

        Returns
        -------
        ndarray, shape (..., n_frames)
            ``(1/d) * integral of y over each frame``; exact for a piecewise-linear
            curve through the samples.
        """
        t = np.asarray(t, dtype=float)
        y = np.asarray(y, dtype=float)
        if t[0] > self._start[0] + TIME_TOL_MIN or t[-1] < self.end[-1] - TIME_TOL_MIN:
            raise TimingError("samples do not cover the frames", field="t",
                              fix="extend the fine time grid over the whole scan")
        cum = np.concatenate(
            [np.zeros(y.shape[:-1] + (1,)),
             np.cumsum(0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(t), axis=-1)], axis=-1)
        edges = np.concatenate([self._start, self.end])
        # integral at arbitrary edges: cum at left sample + partial trapezoid
        j = np.clip(np.searchsorted(t, edges, side="right") - 1, 0, t.size - 2)
        h = edges - t[j]
        slope = (y[..., j + 1] - y[..., j]) / (t[j + 1] - t[j])
        val = cum[..., j] + y[..., j] * h + 0.5 * slope * h * h
        n = self.n_frames
        return (val[..., n:] - val[..., :n]) / self._duration


#: Shortest frame (s) of a real dynamic PET schedule; shorter frames are minutes misread.
MIN_REAL_FRAME_S = 1.0


def frames_look_like_minutes(start_s: ArrayLike, duration_s: ArrayLike, *,
                             half_life_s: float | None = None
                             ) -> tuple[Literal["error", "warning"], str] | None:
    """Whether frame times stated in seconds are really minutes (the one shared check).

    Every reader of frame timing in seconds (BIDS-PET sidecars, ``*_tacs.tsv``,
    frame tables) and ``petbind validate`` call this, so that a schedule
    written in minutes is refused before a model fits a 90-second "scan".

    Parameters
    ----------
    start_s, duration_s : array_like
        Frame starts and durations as read, in seconds.
    half_life_s : float, optional
        Half-life of the tracer's radionuclide (s), when known.

    Returns
    -------
    ("error" | "warning", message) or None
        ``"error"`` when a frame lasts under :data:`MIN_REAL_FRAME_S` (1 s)
        and the whole scan under 10 min: real dynamic PET frames last at
        least 1 s, while a schedule in minutes starts with 1/6-, 1/4- or
        1/2-minute frames. ``"warning"`` when at least 8 frames span under
        5 min and under a tenth of the half-life (or, half-life unknown, at
        least 15 frames span under 3 min). ``None`` otherwise; real short
        schedules such as 6 x 10 s, or [15O]water's 12 x 5 s + ..., pass.
    """
    s = np.atleast_1d(np.asarray(start_s, dtype=float))
    d = np.atleast_1d(np.asarray(duration_s, dtype=float))
    if s.size == 0 or d.size != s.size or not (np.all(np.isfinite(s))
                                              and np.all(np.isfinite(d))):
        return None
    n = s.size
    end = float(np.max(s + d))
    shortest = float(np.min(d))
    if n >= 2 and 0 < shortest < MIN_REAL_FRAME_S and end < 600.0:
        return ("error", f"frame times look like minutes: read as seconds, the shortest of "
                f"the {n} frames lasts {shortest:.3g} s and the whole scan {end:.4g} s")
    if half_life_s is not None and half_life_s > 0:
        if n >= 8 and end < 300.0 and end < 0.1 * half_life_s:
            return ("warning", f"the {n} frames span only {end:.4g} s, under a tenth of the "
                    f"half-life ({half_life_s:g} s); were minutes written instead of seconds?")
    elif n >= 15 and end < 180.0:
        return ("warning", f"the {n} frames span only {end:.4g} s; were minutes written "
                "instead of seconds?")
    return None


def check_frames_in_seconds(start_s: ArrayLike, duration_s: ArrayLike, *,
                            half_life_s: float | None = None, path: str | None = None,
                            field: str = "FrameDuration") -> str | None:
    """Raise :class:`TimingError` when :func:`frames_look_like_minutes` says ``"error"``.

    Returns
    -------
    str or None
        The warning message, if any, for the caller to pass on.
    """
    verdict = frames_look_like_minutes(start_s, duration_s, half_life_s=half_life_s)
    if verdict is None:
        return None
    severity, message = verdict
    if severity == "error":
        raise TimingError(message, path=path, field=field, fix=MINUTES_FIX)
    return message


#: The fix named when frame times look like minutes.
MINUTES_FIX = ("write frame times in seconds (minutes x 60); BIDS FrameTimesStart, "
               "FrameDuration and TAC-table frame_start/frame_end are seconds")
