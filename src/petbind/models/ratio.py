"""Tissue ratios over a time window: SUVR-style target / reference ratio.

``ratio = int_window C_T dt / int_window C_R dt``, i.e. the duration-weighted
mean of the target over the window divided by that of the reference (frames
wholly inside ``[start, end]``). Near transient equilibrium the ratio
approximates DVR, so ``bp_nd = ratio - 1`` is reported as the usual
ratio-based estimate of BP_ND (biased where equilibrium is not reached;
e.g. Carson et al., J Cereb Blood Flow Metab 1993;13:24-42, and Ito et al.,
J Nucl Med 1998;39:208-214). With no window given the last third of the
scan (frames starting at or after 2/3 of its end time) is used and the
choice is recorded in the settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError
from petbind.models.reference.common import ReferenceModel, Result
from petbind.timing import FrameTiming


class TissueRatio(ReferenceModel):
    """Target-to-reference ratio over a window (SUVR with a reference region).

    Parameters are as for :class:`~petbind.models.reference.ReferenceModel`;
    weights are the frame durations inside the window (a time average),
    whatever ``weights`` says for the fit statistics. Output parameters:
    ``suvr`` (the ratio), ``bp_nd`` (= ratio - 1), ``dvr`` (= ratio).
    ``fitted`` is ``ratio * C_R`` in the window.
    """

    name = "suvr"
    n_params = 1
    min_frames = 1

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, start: float | None = None,
                 end: float | None = None, **kw: Any) -> None:
        self.default_window = start is None and end is None
        if self.default_window:
            start = float(timing.end[-1]) * 2.0 / 3.0
            start = float(timing.start[np.searchsorted(timing.start, start - 1e-9)]) \
                if start <= timing.start[-1] else float(timing.start[-1])
        super().__init__(timing, ref, start=start, end=end, **kw)
        self._dw = timing.duration * self.window
        self._ref_mean = float(self._dw @ self.ref) / float(self._dw.sum())
        if self._ref_mean <= 0:
            raise DataError("reference curve is <= 0 over the ratio window", field="ref",
                            fix="check the reference region or the --start/--end window")

    def _settings(self) -> dict[str, Any]:
        return {"window_rule": "last third of the scan" if self.default_window else "given",
                "average": "duration-weighted"}

    def _fit(self, y: NDArray, w: NDArray) -> Result:
        mean_t = (y @ self._dw) / float(self._dw.sum())
        ratio = mean_t / self._ref_mean
        fitted = ratio[:, None] * self.ref
        params = {"suvr": ratio}  # bp_nd = SUVR - 1 and dvr = SUVR are derived (catalogue)
        return Result(params, {}, fitted, np.isfinite(ratio) & (mean_t > 0))
