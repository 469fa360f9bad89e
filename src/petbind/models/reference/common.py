"""The base of the reference-tissue models: validated input, weights, window, the solve's result.

A reference-tissue model subclasses :class:`ReferenceModel` and implements
``_fit(y, w) -> Result`` for a block of curves (float64 (V, n_frames),
unusable rows zeroed, and weights); :meth:`ReferenceModel.fit` does the rest
(shape check, screening of unusable curves, the validity rule, NaN masking,
reshaping, the :class:`~petbind.models.base.Fit`). Parameters that follow
from the fitted ones (DVR, k2' ...) are declared in the catalogue, not
computed here. docs/adding-a-model.md walks through a new model.

Also here: :class:`_Linearised`, the shared running-integral machinery of
MRTM, MRTM2 and Logan, and the delta-method helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, ModelError
from petbind.isotopes import Isotope
from petbind.models.base import Fit, Model, judge
from petbind.models.weights import frame_weights, window_mask
from petbind.numerics.convolution import (
    PiecewiseLinear,
    running_integral_frame_means,
)
from petbind.timing import FrameTiming

#: Default theta3 = k2 / (1 + BP_ND) range (1/min) for the SRTM family.
THETA3_BOUNDS = (0.001, 2.0)
#: Default number of basis functions (log-spaced) for BF-SRTM (Gunn et al. 1997 used 100).
N_BASIS = 100
#: Default bounds of R1 in the non-linear fits.
R1_BOUNDS = (0.0, 10.0)
#: Rows processed at once in the basis-function search (bounds memory to ~100 MB).
_CHUNK = 16384
#: Curves per block in BF-SRTM's shared-weight kernel (its (block, n_basis) scores
#: and (block, n_frames) arrays stay in the L2 cache).
_BF_BLOCK = 2048
#: Curves per block in the linearised kernels (a block of 29-frame curves and its
#: products stay in the L2 cache).
_BLOCK = 1024


@dataclass
class Result:
    """What a reference model's ``_fit`` returns for a block of V curves.

    Attributes
    ----------
    params : dict of str -> ndarray (V,)
        The parameters the model solved for (derived ones come from the catalogue).
    se : dict of str -> ndarray (V,)
        Standard errors (any subset of the parameters).
    fitted : ndarray (V, n_frames) or callable returning it
        Model prediction (frame means), evaluated lazily when callable.
    valid : ndarray of bool (V,)
        Where the solve succeeded and the model accepts its solution.
    extra : dict
        Model-specific arrays for ``Fit.extra`` (plot coordinates ...).
    """

    params: dict[str, NDArray]
    se: dict[str, NDArray]
    fitted: NDArray | Callable[[], NDArray]
    valid: NDArray[np.bool_]
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``(signal, total)`` per curve when ``_fit`` screened the raw curves itself
    #: (models with ``screens = True``, shared weights): the duration-weighted sum
    #: over the window and the plain sum over all frames (non-finite if any frame is).
    screen: tuple[NDArray, NDArray] | None = None
    #: per parameter name, where the solution sits on a bound of the search box
    bound: dict[str, NDArray] | None = None


def _quad_inv(a: NDArray, grads: list[list[Any]]) -> list[NDArray]:
    """``g' A^-1 g`` for stacked normal matrices ``A`` (V, p, p), p = 2 or 3, and several ``g``.

    Each gradient is a list of p entries (arrays (V,) or scalars; ``0`` for a
    zero entry). Computed from the cofactors of ``A`` with one division, so no
    inverse matrix is formed; NaN where ``A`` is singular (the test of
    :func:`petbind.numerics.optimize.inv_sym`).
    """
    p = a.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == 2:
            a00, a01, a11 = a[:, 0, 0], a[:, 0, 1], a[:, 1, 1]
            cof = {(0, 0): a11, (1, 1): a00, (0, 1): -a01}
            det = a00 * a11 - a01 * a01
        else:
            a00, a01, a02 = a[:, 0, 0], a[:, 0, 1], a[:, 0, 2]
            a11, a12, a22 = a[:, 1, 1], a[:, 1, 2], a[:, 2, 2]
            cof = {(0, 0): a11 * a22 - a12 * a12, (0, 1): a02 * a12 - a01 * a22,
                   (0, 2): a01 * a12 - a02 * a11, (1, 1): a00 * a22 - a02 * a02,
                   (1, 2): a01 * a02 - a00 * a12, (2, 2): a00 * a11 - a01 * a01}
            det = a00 * cof[0, 0] + a01 * cof[0, 1] + a02 * cof[0, 2]
        # A is a normal matrix (positive semi-definite): its largest entry is on the
        # diagonal, so the scale of the singularity test is the largest diagonal entry
        scale = np.maximum(a00, a11) if p == 2 else np.maximum(np.maximum(a00, a11), a22)
        det = np.where(np.abs(det) > 1e-13 * scale**p, det, np.nan)
        out = []
        for g in grads:
            q = 0.0
            for i in range(p):
                if isinstance(g[i], int) and g[i] == 0:
                    continue
                for j in range(i, p):
                    if isinstance(g[j], int) and g[j] == 0:
                        continue
                    term = cof[i, j] * (g[i] * g[j])
                    q = q + (term if i == j else 2.0 * term)
            out.append(q / det)
        return out


def _sigma2(resid: NDArray, w: NDArray, p: int) -> NDArray:
    """Weighted residual variance ``WRSS / (n_used - p)`` (NaN if no degrees of freedom)."""
    used = np.broadcast_to(w > 0, resid.shape)
    wrss = np.sum(np.where(used, w * resid * resid, 0.0), axis=-1)
    dof = np.sum(used, axis=-1) - p
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dof > 0, wrss / dof, np.nan)


def _se_of(grad: NDArray, cov: NDArray) -> NDArray:
    """Delta-method standard error ``sqrt(g' C g)`` for stacked gradients (..., p)."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.einsum("...i,...ij,...j->...", grad, cov, grad))


class ReferenceModel(Model):
    """Base of the reference-tissue models: validated input, weights, window.

    Parameters
    ----------
    timing : FrameTiming
        Frames of the curves (minutes after injection).
    ref : array_like, shape (n_frames,)
        Reference-region frame means (kBq/mL, decay-corrected to injection).
    weights : {"uniform", "duration", "counts"} or array_like
        Frame weights (:func:`petbind.models.weights.frame_weights`); the
        ``counts`` scheme uses ``weight_curve`` (default: the reference).
    start, end : float, optional
        Fit window in minutes: frames wholly inside take part in the fit; the
        input curve is always used from injection.
    isotope : Isotope or str, optional
        Radionuclide, for ``counts`` weights.
    weight_curve : array_like, optional
        Curve for ``counts`` weights (kBq/mL).
    """

    name: ClassVar[str] = ""
    n_params: ClassVar[int] = 0
    min_frames: ClassVar[int] = 3
    #: True for models whose ``_fit`` takes the raw curves (float32 or float64, any
    #: memory layout, unusable rows included) when the weights are shared, casts
    #: them to float64 in cache-sized blocks and returns ``_Result.screen``; the
    #: others get float64 curves with unusable rows zeroed.
    screens: ClassVar[bool] = False

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *,
                 weights: str | ArrayLike | None = "uniform", start: float | None = None,
                 end: float | None = None, isotope: Isotope | str | None = None,
                 weight_curve: ArrayLike | None = None) -> None:
        if not isinstance(timing, FrameTiming):
            raise ModelError("timing must be a FrameTiming", field="timing",
                             fix="build it with FrameTiming.from_seconds(...)")
        r = np.asarray(ref, dtype=float)
        n = timing.n_frames
        if r.shape != (n,):
            raise ModelError(f"reference curve has shape {r.shape}, expected ({n},)",
                             field="ref", fix="give one reference value per frame")
        bad = np.flatnonzero(~np.isfinite(r))
        if bad.size:
            raise DataError(f"reference curve is not finite at frame {bad[0]}", field="ref",
                            fix="check the reference region (NaN frames?) or choose another")
        if np.max(r) <= 0 or np.sum(r * timing.duration) <= 0:
            raise DataError("reference curve has no signal (all values <= 0)", field="ref",
                            fix="check the reference region name and the image units")
        self.timing = timing
        self.ref = r
        self.start = start
        self.end = end
        self.window = window_mask(timing, start, end, min_frames=self.min_frames)
        self.isotope = isotope
        self.weight_scheme = weights if isinstance(weights, str) or weights is None \
            else "user"
        wc = r if weight_curve is None else weight_curve
        self.weights = frame_weights(weights, timing, curve=wc, isotope=isotope,
                                     window=self.window)
        self._ref_form = PiecewiseLinear.mean_preserving(timing, r)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting, for sidecars and reports."""
        iso = self.isotope.name if isinstance(self.isotope, Isotope) else self.isotope
        return {"model": self.name, "weights": self.weight_scheme, "start_min": self.start,
                "end_min": self.end, "isotope": iso,
                "n_frames_window": int(self.window.sum()), **self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {}

    def fit(self, tacs: ArrayLike, weights: str | ArrayLike | None = None) -> Fit:
        """Fit a batch of target curves.

        Parameters
        ----------
        tacs : array_like, shape (..., n_frames)
            Target frame means (kBq/mL).
        weights : str or array_like, optional
            Override the model's weights for this call (same forms as the
            constructor; ``counts`` uses the reference curve).

        Returns
        -------
        Fit
            Parameters shaped like the batch; curves with a non-finite frame or
            a duration-weighted mean <= 0 over the window are invalid (NaN
            parameters). ``fitted`` is computed on first access.
        """
        y = self._curves(tacs, keep_float32=self.screens)
        n = self.timing.n_frames
        if weights is None:
            w = self.weights
        else:
            w = frame_weights(weights, self.timing, curve=self.ref, isotope=self.isotope,
                              window=self.window)
        batch = y.shape[:-1]
        y2 = y.reshape(-1, n)
        w2 = w if w.ndim == 1 else np.broadcast_to(w, y.shape).reshape(-1, n)
        dwin = self.timing.duration * self.window
        if self.screens and w2.ndim == 1:
            # one pass over the raw curves: the model's own blocked kernel also returns
            # the screening sums (float32 input is cast block by block, exactly)
            with np.errstate(all="ignore"):
                res = self._fit(y2, w2)
            assert res.screen is not None
            signal, total = res.screen
        else:
            # row-major float64 (a frames-by-voxels view arrives column-major)
            y2 = np.ascontiguousarray(y2, dtype=np.float64)
            y = y2.reshape(y.shape)
            with np.errstate(invalid="ignore", over="ignore"):
                # a NaN/inf anywhere makes a row sum non-finite; signal = duration-weighted
                # mean over the window > 0 (matrix-vector products, no temporaries)
                signal = y2 @ dwin
                total = signal if self.window.all() else y2 @ np.ones(n)
            res = None
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(total) & (signal > 0)
        if res is None:
            yf = y2 if bool(ok.all()) else np.where(ok[:, None], y2, 0.0)
            with np.errstate(all="ignore"):
                res = self._fit(yf, w2)
        wpos = (w2 > 0) & self.window
        n_used = int(np.count_nonzero(wpos)) if wpos.ndim == 1 else np.sum(wpos, axis=-1)
        judged = judge(ok, res.valid, n_used, self.n_params, res.bound)
        valid = judged[0]
        window = self.window

        def fitted() -> NDArray:
            f = res.fitted() if callable(res.fitted) else res.fitted
            if valid.all() and window.all():
                return f.reshape(y.shape)
            return np.where(valid[:, None] & window, f, np.nan).reshape(y.shape)

        extra = {k: (v.reshape(batch + v.shape[1:]) if isinstance(v, np.ndarray)
                     and v.ndim >= 1 and v.shape[0] == y2.shape[0] else v)
                 for k, v in res.extra.items()}
        # the arrays of a _Result belong to it: invalid entries become NaN in place
        return self._assemble(batch=batch, params=res.params, se=res.se, data=y,
                              fitted=fitted, weights=w if w.ndim == 1 else w.reshape(y.shape),
                              usable=ok, solved=res.valid, n_used=n_used,
                              n_params=self.n_params, bound=res.bound,
                              settings=self.settings, extra=extra, judged=judged)

    def _fit(self, y: NDArray, w: NDArray) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError



# ----------------------------------------------------------------------------
# linearised methods
# ----------------------------------------------------------------------------
class _Linearised(ReferenceModel):
    """Shared pieces of MRTM, MRTM2 and Logan: frame means of running integrals."""

    def __init__(self, timing: FrameTiming, ref: ArrayLike, **kw: Any) -> None:
        super().__init__(timing, ref, **kw)
        self._jmat = running_integral_frame_means(timing)       # (n, n)
        self.ref_int = self._jmat @ self.ref                     # J(C_R), kBq/mL * min

    def _settings(self) -> dict[str, Any]:
        return {"integration": "operational equation averaged over frames, mean-preserving "
                               "piecewise-linear curves"}

    def _target_int(self, y: NDArray) -> NDArray:
        return y @ self._jmat.T

    def _frame_stats(self, y: NDArray, w: NDArray, lin: NDArray) -> NDArray:
        """Per-curve sums of the linearised methods for shared weights, in one pass.

        For every curve ``y`` (frame means) returns the rows
        ``[J'WJ, J'Wy, y'Wy, lin @ y ..., signal, total]`` (shape (3 + k + 2, V)),
        ``J = L y`` the frame means of its running integral, ``W = diag(w)``,
        ``lin`` (k, n) further linear functionals, ``signal`` the
        duration-weighted sum over the window and ``total`` the plain sum
        (non-finite when any frame is).

        The curves are read in blocks of :data:`_BLOCK` columns of the
        frames-by-curves view ``y.T`` (a float32 block is cast to float64
        there, exactly) and all linear maps are one product with a stacked
        matrix ``[sqrt(W) L; lin; d_window; 1]``; the quadratic forms are sums
        of squares and products of ``sqrt(W) L y`` and ``sqrt(W) y``: one
        matrix product, one scaling and three reductions per block, all in
        cache, in float64.
        """
        n = self.timing.n_frames
        key = (w.tobytes(), lin.tobytes())
        cached = self.__dict__.get("_fs")
        if cached is None or cached[0] != key:
            sw = np.sqrt(w)
            dwin = self.timing.duration * self.window
            m = np.concatenate([sw[:, None] * self._jmat, lin, dwin[None], np.ones((1, n))])
            self.__dict__["_fs"] = (key, m, sw[:, None])
        m, sw = self.__dict__["_fs"][1:]
        yt = y.T
        v = y.shape[0]
        out = np.empty((m.shape[0] - n + 3, v))
        for s in range(0, v, _BLOCK):
            e = min(s + _BLOCK, v)
            yb = yt[:, s:e].astype(np.float64, copy=False)
            z = m @ yb
            jb = z[:n]
            yb = yb * sw
            out[0, s:e] = np.einsum("tv,tv->v", jb, jb)
            out[1, s:e] = np.einsum("tv,tv->v", jb, yb)
            out[2, s:e] = np.einsum("tv,tv->v", yb, yb)
            out[3:, s:e] = z[n:]
        return out


