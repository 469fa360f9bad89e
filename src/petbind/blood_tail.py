"""Blood samples that end before the scan does: hold the last value or extrapolate.

Real arterial data often stop a little before the last frame (kinfitr's
public [11C]PBR28 scans: 0.1-1.2 min before the last frame's mid-time).
kinfitr holds the last value; petbind does the same by default
(``method="hold"``) or extrapolates a mono-exponential fitted to the last
part of the curve (``method="extrapolate"``), and says so in a warning and
in the input's ``settings``. Past :data:`TAIL_LIMIT_MIN` minutes, or
:data:`TAIL_LIMIT_FRACTION` of the scan, the input is refused: the tail
would then carry too much of the integral.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from petbind.blood import InputFunction
from petbind.errors import ConfigError, DataError
from petbind.numerics.convolution import PiecewiseLinear
from petbind.timing import TIME_TOL_MIN, FrameTiming

#: Longest gap (min) between the last blood sample and the end of the scan that is bridged.
TAIL_LIMIT_MIN = 10.0
#: ... and at most this fraction of the scan's length.
TAIL_LIMIT_FRACTION = 0.2
#: The fitted tail uses the knots of the last this fraction of the sampled time.
TAIL_FIT_FRACTION = 1.0 / 3.0

TailMethod = Literal["hold", "extrapolate"]


def _tail_rate(curve: PiecewiseLinear, t_last: float) -> float:
    """Clearance rate (1/min, >= 0) of a log-linear fit to the curve's last third.

    Fitted to the knots in ``[t_last (1 - TAIL_FIT_FRACTION), t_last]`` with
    positive values (least squares on ``log y``); a rising or flat tail gives 0
    (held).
    """
    t = curve.t
    y = np.asarray(curve.y, dtype=float)
    sel = (t >= t_last * (1.0 - TAIL_FIT_FRACTION)) & (t <= t_last + TIME_TOL_MIN) & (y > 0)
    if np.count_nonzero(sel) < 3:
        return 0.0
    slope = np.polyfit(t[sel], np.log(y[sel]), 1)[0]
    return float(max(-slope, 0.0))


def _extend(curve: PiecewiseLinear, t_last: float, t_end: float, rate: float,
            step_min: float) -> PiecewiseLinear:
    keep = curve.t <= t_last + TIME_TOL_MIN
    t0, y = curve.t[keep], np.asarray(curve.y, dtype=float)[..., keep]
    y_last = float(curve.interp(np.array([t_last]))[0])
    n = max(int(np.ceil((t_end - t_last) / step_min)), 1)
    tt = t_last + np.arange(1, n + 1) * (t_end - t_last) / n
    if t0[-1] < t_last - TIME_TOL_MIN:
        t0, y = np.append(t0, t_last), np.append(y, y_last)
    return PiecewiseLinear(np.concatenate([t0, tt]),
                           np.concatenate([y, y_last * np.exp(-rate * (tt - t_last))]))


def cover_scan(inp: InputFunction, timing: FrameTiming, method: TailMethod = "hold", *,
               margin_min: float = 2.0) -> tuple[InputFunction, str | None]:
    """An input that covers the whole scan, and the warning to show (None if it did already).

    Parameters
    ----------
    inp : InputFunction
        As made by :func:`petbind.blood.input_from_recordings`.
    timing : FrameTiming
        The scan's frames (minutes).
    method : {"hold", "extrapolate"}
        ``"hold"``: the last value stays (kinfitr). ``"extrapolate"``: the
        plasma and whole-blood curves continue from their last value with the
        mono-exponential rate of a log-linear fit to their last third
        (:func:`_tail_rate`; a rising tail is held).
    margin_min : float
        The curves are continued this far past the scan's end, so that a
        fitted delay cannot uncover it again.

    Raises
    ------
    DataError
        The samples end more than :data:`TAIL_LIMIT_MIN` min, or
        :data:`TAIL_LIMIT_FRACTION` of the scan, before its end.
    ConfigError
        Unknown ``method``.
    """
    if method not in ("hold", "extrapolate"):
        raise ConfigError(f"unknown blood tail method {method!r}", field="--blood-tail",
                          fix="use hold or extrapolate")
    end = float(timing.end[-1])
    gap = end - inp.t_last
    if gap <= TIME_TOL_MIN:
        return inp, None
    limit = min(TAIL_LIMIT_MIN, TAIL_LIMIT_FRACTION * (end - float(timing.start[0])))
    if gap > limit:
        raise DataError(
            f"blood samples end at {inp.t_last:.4g} min, {gap:.3g} min before the scan "
            f"({end:.4g} min); petbind bridges at most {limit:.3g} min "
            f"(the smaller of {TAIL_LIMIT_MIN:g} min and {100 * TAIL_LIMIT_FRACTION:g} % of "
            "the scan)", path=inp.source, field=inp.time_field,
            fix="give blood samples up to the end of the scan, or fit only the frames the "
                "blood covers (--end)")
    step = float(inp.settings.get("grid_step_min", 0.1))
    rates = {"plasma": 0.0, "blood": 0.0}
    if method == "extrapolate":
        rates = {"plasma": _tail_rate(inp.plasma, inp.t_last),
                 "blood": _tail_rate(inp.blood, inp.t_last)}
    t_end = end + margin_min
    plasma = _extend(inp.plasma, inp.t_last, t_end, rates["plasma"], step)
    blood = _extend(inp.blood, inp.t_last, t_end, rates["blood"], step)
    what = ("held at the last value" if method == "hold" else
            f"extrapolated mono-exponentially (plasma {rates['plasma']:.3g}/min, whole blood "
            f"{rates['blood']:.3g}/min)")
    note = (f"blood samples end at {inp.t_last:.4g} min, {gap:.3g} min before the end of the "
            f"scan ({end:.4g} min): {what}")
    settings = {**inp.settings, "tail": {"method": method, "last_sample_min": inp.t_last,
                                         "gap_min": gap, "rates_per_min": rates}}
    return replace(inp, plasma=plasma, blood=blood, t_last=t_end, settings=settings), note
