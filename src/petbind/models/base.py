"""Model / Fit base classes shared by every kinetic model.

A model holds what does not depend on the target curves (frame timing, the
input curve, settings, precomputed bases); ``Model.fit(tacs, weights=None)``
fits a batch of curves shaped ``(..., n_frames)`` and returns a :class:`Fit`
whose parameter arrays have the batch shape (dipy's ``reconst`` pattern).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from petbind.timing import FrameTiming


@dataclass
class Fit:
    """The result of fitting a model to a batch of curves.

    Attributes
    ----------
    model : str
        Model name, e.g. ``"srtm"``.
    timing : FrameTiming
        Frames of the fitted curves.
    params : dict of str -> ndarray
        Named parameters, each shaped like the batch (uniform names across
        models: ``bp_nd``, ``r1``, ``k2``, ``k2prime``, ``dvr``, ``vt``, ...).
    se : dict of str -> ndarray
        Standard errors of (some of) ``params``; NaN where not available.
    data : ndarray, shape (..., n_frames)
        The fitted curves.
    fitted : ndarray, shape (..., n_frames), or a callable returning it
        Model prediction at the solution (frame averages), NaN for frames not
        used by the model (outside its window). A callable is evaluated on
        first access and cached.
    weights : ndarray, shape (..., n_frames) or (n_frames,)
        Weights used (0 for frames outside the window).
    valid : ndarray of bool, batch shape
        False where the fit failed, the curve was unusable or a parameter hit
        a bound it should not; invalid parameters are NaN.
    n_params : int
        Number of fitted parameters (for AIC).
    settings : dict
        Every setting used, for sidecars and reports.
    """

    model: str
    timing: FrameTiming
    params: dict[str, NDArray]
    data: NDArray
    fitted: NDArray
    weights: NDArray
    valid: NDArray[np.bool_]
    n_params: int
    se: dict[str, NDArray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if callable(self.fitted):
            # computed on first access (a voxel map that reads only parameters never pays)
            self.__dict__["_fitted_fn"] = self.__dict__.pop("fitted")

    def __getattr__(self, name: str) -> NDArray:
        if name == "fitted" and "_fitted_fn" in self.__dict__:
            value = self.__dict__.pop("_fitted_fn")()
            self.__dict__["fitted"] = value
            return value
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    @property
    def shape(self) -> tuple[int, ...]:
        """Batch shape."""
        return self.valid.shape

    def predict(self) -> NDArray:
        """Model prediction (frame averages) at the fitted parameters."""
        return self.fitted

    @property
    def residuals(self) -> NDArray:
        """``data - fitted`` (NaN outside the model's window)."""
        return self.data - self.fitted

    def _used(self) -> NDArray[np.bool_]:
        w = np.broadcast_to(self.weights, self.data.shape)
        return (w > 0) & np.isfinite(self.fitted)

    @property
    def wrss(self) -> NDArray:
        """Weighted residual sum of squares over the frames used."""
        w = np.broadcast_to(self.weights, self.data.shape)
        r = np.where(self._used(), self.residuals, 0.0)
        return np.sum(w * r * r, axis=-1)

    @property
    def n_used(self) -> NDArray:
        """Number of frames used in the fit."""
        return np.sum(self._used(), axis=-1)

    @property
    def aic(self) -> NDArray:
        """Akaike information criterion, ``n ln(WRSS/n) + 2p`` (Akaike 1974)."""
        n = self.n_used
        with np.errstate(divide="ignore", invalid="ignore"):
            out = n * np.log(self.wrss / n) + 2 * self.n_params
        return np.where(self.valid, out, np.nan)

    @property
    def r2(self) -> NDArray:
        """Weighted coefficient of determination over the frames used."""
        w = np.broadcast_to(self.weights, self.data.shape)
        used = self._used()
        ws = np.sum(np.where(used, w, 0.0), axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.sum(np.where(used, w * self.data, 0.0), axis=-1) / ws
            tss = np.sum(np.where(used, w * (self.data - mean[..., None]) ** 2, 0.0), axis=-1)
            out = 1.0 - self.wrss / tss
        return np.where(self.valid, out, np.nan)

    def to_frame(self, names: list[str] | None = None) -> pd.DataFrame:
        """Tidy table: one row per curve, parameters, ``<name>_se``, fit statistics.

        Parameters
        ----------
        names : list of str, optional
            Row labels (e.g. region names) for a 1-D batch; stored in ``region``.
        """
        n = int(np.prod(self.shape)) if self.shape else 1
        cols: dict[str, Any] = {}
        if names is not None:
            cols["region"] = list(names)
        cols["model"] = [self.model] * n
        keys = sorted(self.params, key=lambda k: k != "bp_nd")  # bp_nd first, order kept
        for k in keys:
            cols[k] = np.broadcast_to(self.params[k], self.shape).reshape(n)
        for k, v in self.se.items():
            cols[f"{k}_se"] = np.broadcast_to(v, self.shape).reshape(n)
        cols["aic"] = np.asarray(self.aic).reshape(n)
        cols["r2"] = np.asarray(self.r2).reshape(n)
        cols["n_frames_used"] = np.asarray(self.n_used).reshape(n)
        cols["valid"] = np.asarray(self.valid).reshape(n)
        return pd.DataFrame(cols)
