"""The continuous input function (plasma and whole blood) and its delay.

Step 7 of :mod:`petbind.blood`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.blood.metabolites import ParentFraction, PlasmaBloodRatio
from petbind.blood.samples import _with_zero, check_samples
from petbind.errors import ConfigError, DataError
from petbind.numerics.convolution import PiecewiseLinear
from petbind.timing import TIME_TOL_MIN, FrameTiming

# ----------------------------------------------------------------------------
# continuous input function
# ----------------------------------------------------------------------------
#: Width (min) of the ramp that stands for the step of a delayed curve whose
#: first sample is not 0 (0.36 s: far below any frame or sampling interval).
STEP_RAMP_MIN = 1e-4


def shift_curve(curve: PiecewiseLinear, delay_min: float) -> PiecewiseLinear:
    """The curve delayed by ``delay_min`` minutes: ``C(t - delay)``, exactly.

    Knots move by ``delay_min``; a positive delay puts ``(0, 0)`` before the
    first knot (and, when the curve does not start at 0, a zero knot
    :data:`STEP_RAMP_MIN` before it: the curve is 0 before its first sample,
    so the delayed curve steps up there rather than ramping from injection),
    a negative one cuts the curve at ``t = 0`` (its value there is
    interpolated).
    """
    t = curve.t + delay_min
    y = curve.y
    if delay_min > 0:
        if t[0] > TIME_TOL_MIN:
            zero = np.zeros(y.shape[:-1] + (1,))
            if np.any(y[..., 0] != 0) and t[0] > 2 * STEP_RAMP_MIN:
                t = np.concatenate([[0.0, t[0] - STEP_RAMP_MIN], t])
                y = np.concatenate([zero, zero, y], axis=-1)
            else:
                t = np.concatenate([[0.0], t])
                y = np.concatenate([zero, y], axis=-1)
    elif delay_min < 0:
        keep = t > TIME_TOL_MIN
        y0 = curve.interp(np.array([-delay_min]))
        t = np.concatenate([[0.0], t[keep]])
        y = np.concatenate([y0, y[..., keep]], axis=-1)
    return PiecewiseLinear(t, y)


@dataclass(frozen=True)
class InputFunction:
    """Metabolite-corrected plasma input and whole-blood curve, continuous.

    Attributes
    ----------
    plasma : PiecewiseLinear
        Parent (metabolite-corrected) plasma activity C_P(t), kBq/mL,
        decay-corrected like the image.
    blood : PiecewiseLinear
        Whole-blood activity C_B(t), kBq/mL (for the blood-volume term v_B).
    delay_min : float
        Delay already applied (min; see the module docstring for the sign).
    t_last : float
        Time (min) of the last measured sample; the curves are held constant
        after their last knot, so a scan must not outlast this
        (:meth:`check_covers`).
    source : str, optional
        The blood file, named in errors.
    time_field : str
        Its time column, named in errors.
    settings : dict
        How the curves were made (ratio model, parent model, grid, delay, ...).
    parent : ParentFraction, optional
        The parent-fraction model used (for plots and reports).
    """

    plasma: PiecewiseLinear
    blood: PiecewiseLinear
    delay_min: float = 0.0
    t_last: float = float("inf")
    source: str | None = None
    time_field: str = "time"
    settings: dict[str, Any] = field(default_factory=dict)
    parent: ParentFraction | None = None

    def shifted(self, delay_min: float) -> InputFunction:
        """The input delayed by a further ``delay_min`` minutes."""
        if delay_min == 0:
            return self
        return InputFunction(shift_curve(self.plasma, delay_min),
                             shift_curve(self.blood, delay_min),
                             self.delay_min + delay_min, self.t_last + delay_min,
                             self.source, self.time_field,
                             {**self.settings, "delay_min": self.delay_min + delay_min},
                             self.parent)

    def on_grid(self, step_min: float, t_end: float | None = None
                ) -> tuple[NDArray, NDArray, NDArray]:
        """``(t, C_P(t), C_B(t))`` on a uniform grid from 0 (for plots and export)."""
        end = self.t_last if t_end is None else t_end
        t = np.arange(0.0, end + 0.5 * step_min, step_min)
        return t, self.plasma.interp(t), self.blood.interp(t)

    def check_covers(self, timing: FrameTiming, *, tolerance_min: float | None = None) -> None:
        """Raise :class:`DataError` when the blood data end before the scan does.

        Parameters
        ----------
        timing : FrameTiming
            The scan's frames.
        tolerance_min : float, optional
            How long before the end of the last frame the last sample may be;
            default half the last frame (the samples must reach its mid-time).
        """
        tol = 0.5 * timing.duration[-1] if tolerance_min is None else tolerance_min
        end = float(timing.end[-1])
        if self.t_last < end - tol - TIME_TOL_MIN:
            raise DataError(
                f"blood samples end at {self.t_last:.3g} min but the scan runs to "
                f"{end:.3g} min", path=self.source, field=self.time_field,
                fix="give blood samples up to the end of the scan, or fit only the frames "
                    "the blood covers (--end)")


def _grid(t_list: list[NDArray], step: float, t_end: float) -> NDArray:
    grid = np.arange(0.0, t_end + 0.5 * step, step)
    tt = np.unique(np.concatenate([grid, *t_list]))
    tt = tt[np.concatenate([[True], np.diff(tt) > 1e-7])]  # merge float near-duplicates
    return tt[tt <= t_end + TIME_TOL_MIN]


def build_input_function(
    *,
    plasma: tuple[ArrayLike, ArrayLike] | None = None,
    whole_blood: tuple[ArrayLike, ArrayLike] | None = None,
    ratio: PlasmaBloodRatio | float | None = None,
    parent: ParentFraction | Callable[[NDArray], NDArray] | None = None,
    grid_step_min: float = 0.1,
    delay_min: float = 0.0,
    source: str | None = None,
    time_field: str = "time",
) -> InputFunction:
    """Make the continuous input function from processed blood samples.

    Parameters
    ----------
    plasma : (t, y), optional
        Total plasma activity samples (min, kBq/mL).
    whole_blood : (t, y), optional
        Whole-blood activity samples (min, kBq/mL).
    ratio : PlasmaBloodRatio or float, optional
        Plasma/blood ratio. Used to make plasma from whole blood when no plasma
        samples are given, and whole blood from plasma when no whole blood is
        given. With neither ratio nor whole blood, whole blood is taken equal
        to plasma (recorded in ``settings``).
    parent : ParentFraction or callable, optional
        Parent fraction f(t); the input is ``f(t) C_plasma(t)``. ``None``:
        the plasma is taken as parent already (recorded in ``settings``).
    grid_step_min : float
        Step (min) of the uniform grid added to the sample times; the products
        with the ratio and the parent fraction are evaluated on it, and the
        curves are linear between the resulting knots.
    delay_min : float
        Delay to apply (see :meth:`InputFunction.shifted`).
    source, time_field : str
        Blood file and time column, named in errors.

    Returns
    -------
    InputFunction
    """
    if grid_step_min <= 0:
        raise ConfigError(f"grid step {grid_step_min!r} min must be > 0",
                          field="grid_step_min", fix="use e.g. 0.1 (minutes)")
    if plasma is None and whole_blood is None:
        raise DataError("no plasma and no whole-blood samples", path=source,
                        field="plasma_radioactivity",
                        fix="give plasma_radioactivity or whole_blood_radioactivity")
    if plasma is None and ratio is None:
        raise DataError("only whole blood given and no plasma/blood ratio", path=source,
                        field="plasma_radioactivity",
                        fix="give plasma samples or a plasma/blood ratio")
    rat = PlasmaBloodRatio.constant_value(ratio) if isinstance(ratio, (int, float)) else ratio
    settings: dict[str, Any] = {"grid_step_min": grid_step_min}
    pts: list[NDArray] = []
    pl_curve = wb_curve = None
    if plasma is not None:
        tp, yp = check_samples(*plasma, path=source, time_field=time_field,
                               value_field="plasma_radioactivity")
        pl_curve = PiecewiseLinear(*_with_zero(tp, yp))
        pts.append(tp)
    if whole_blood is not None:
        tb, yb = check_samples(*whole_blood, path=source, time_field=time_field,
                               value_field="whole_blood_radioactivity")
        wb_curve = PiecewiseLinear(*_with_zero(tb, yb))
        pts.append(tb)
    t_last = min(float(p[-1]) for p in pts)
    tt = _grid(pts, grid_step_min, max(float(p[-1]) for p in pts))
    if pl_curve is not None:
        cp = pl_curve.interp(tt)
        settings["plasma_source"] = "plasma samples"
    else:
        cp = rat(tt) * wb_curve.interp(tt)
        settings["plasma_source"] = f"whole blood x plasma/blood ratio ({rat.kind})"
    if wb_curve is not None:
        cb = wb_curve.interp(tt)
        settings["blood_source"] = "whole-blood samples"
    elif rat is not None:
        cb = cp / rat(tt)
        settings["blood_source"] = f"plasma / plasma-blood ratio ({rat.kind})"
    else:
        cb = cp.copy()
        settings["blood_source"] = "plasma (no whole blood or ratio given)"
    if parent is None:
        settings["parent_fraction"] = "none (plasma taken as parent)"
        cpp = cp
    else:
        cpp = cp * np.asarray(parent(tt), dtype=float)
        settings["parent_fraction"] = getattr(parent, "kind", "callable")
        if isinstance(parent, ParentFraction):
            settings["parent_params"] = dict(parent.params)
    inp = InputFunction(PiecewiseLinear(tt, cpp), PiecewiseLinear(tt, cb), 0.0, t_last,
                        source, time_field, settings,
                        parent if isinstance(parent, ParentFraction) else None)
    return inp.shifted(delay_min)


