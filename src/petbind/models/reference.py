"""Reference-tissue models: SRTM, SRTM2, basis-function SRTM, MRTM, MRTM2, Logan.

All models fit a batch of target curves shaped ``(..., n_frames)`` (frame
means, kBq/mL, decay-corrected to injection; times in minutes) against one
reference-region curve, in one vectorised call.

Continuous form and frame integration
-------------------------------------
The reference curve (and, for the linearised methods, each target curve) is
given the *mean-preserving piecewise-linear* form of
:meth:`~petbind.numerics.convolution.PiecewiseLinear.mean_preserving`: zero at
injection, knots at each frame's start, mid-point and end, whose average over
every frame equals the measured frame mean. Then

- SRTM-family predictions are exact frame averages of the continuous model:
  ``R1 * mean(C_R) + (k2 - R1 theta3) * mean(C_R (*) exp(-theta3 t))`` with the
  convolution done analytically (:mod:`petbind.numerics.convolution`).
- MRTM, MRTM2 and Logan use their operational equations *averaged over each
  frame*, e.g. for MRTM
  ``mean(C_T) = g1 J(C_R) + g2 J(C_T) + g3 mean(C_R)`` where
  ``J_i = (1/d_i) int_frame int_0^t C`` is computed exactly for that form
  (:func:`~petbind.numerics.convolution.running_integral_frame_means`). For a
  target and a reference that both follow one-tissue kinetics these
  equations hold exactly, frame by frame.

References
----------
Lammertsma AA, Hume SP. Simplified reference tissue model for PET receptor
studies. NeuroImage 1996;4:153-158.
Gunn RN, Lammertsma AA, Hume SP, Cunningham VJ. Parametric imaging of
ligand-receptor binding in PET using a simplified reference region model.
NeuroImage 1997;6:279-287.
Wu Y, Carson RE. Noise reduction in the simplified reference tissue model for
neuroreceptor functional imaging. J Cereb Blood Flow Metab 2002;22:1440-1452.
Ichise M, et al. Linearized reference tissue parametric imaging methods:
application to [11C]DASB PET studies of the serotonin transporter in human
brain. J Cereb Blood Flow Metab 2003;23:1096-1112.
Logan J, et al. Distribution volume ratios without blood sampling from
graphical analysis of PET data. J Cereb Blood Flow Metab 1996;16:834-840.
Ichise M, Toyama H, Innis RB, Carson RE. Strategies to improve neuroreceptor
parameter estimation by linear regression analysis. J Cereb Blood Flow Metab
2002;22:1271-1281 (t* by a maximum-error criterion).
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
    ExpConvTable,
    PiecewiseLinear,
    running_integral_frame_means,
)
from petbind.numerics.optimize import inv_sym, levenberg_marquardt, normal_equations
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
class _Result:
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

    def _fit(self, y: NDArray, w: NDArray) -> _Result:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------
# SRTM family
# ----------------------------------------------------------------------------
class _SRTMBase(ReferenceModel):
    """Shared basis machinery of SRTM, SRTM2 and BF-SRTM."""

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *,
                 theta3_bounds: tuple[float, float] = THETA3_BOUNDS, n_basis: int = N_BASIS,
                 theta3_grid: ArrayLike | None = None, k2prime: float | None = None,
                 compute_se: bool = True, **kw: Any) -> None:
        super().__init__(timing, ref, **kw)
        if theta3_grid is not None:
            grid = np.unique(np.asarray(theta3_grid, dtype=float))
            if grid.size < 3 or grid[0] <= 0 or not np.all(np.isfinite(grid)):
                raise ModelError("theta3_grid needs at least 3 positive, finite rates",
                                 field="theta3_grid", fix="e.g. np.geomspace(0.001, 2, 100)")
            theta3_bounds, n_basis = (grid[0], grid[-1]), grid.size
        lo, hi = (float(theta3_bounds[0]), float(theta3_bounds[1]))
        if not 0 < lo < hi:
            raise ModelError(f"theta3 bounds must satisfy 0 < low < high, got ({lo}, {hi})",
                             field="theta3_bounds", fix="e.g. (0.001, 2.0) 1/min")
        if int(n_basis) < 3:
            raise ModelError("need at least 3 basis functions", field="n_basis",
                             fix="use e.g. 100")
        if k2prime is not None and not (np.isfinite(k2prime) and k2prime > 0):
            raise ModelError(f"k2' must be a positive number, got {k2prime}", field="k2prime",
                             fix="give k2' in 1/min, e.g. 0.1")
        self.theta3_bounds = (lo, hi)
        self.n_basis = int(n_basis)
        self.k2prime = None if k2prime is None else float(k2prime)
        self.compute_se = bool(compute_se)
        self.theta_grid = np.geomspace(lo, hi, self.n_basis) if theta3_grid is None else grid
        self.basis = self._ref_form.exp_conv_frame_means(self.theta_grid, timing)
        self._table: ExpConvTable | None = None

    @property
    def table(self) -> ExpConvTable:
        """Spline table of the convolution over theta3 (built on first use)."""
        if self._table is None:
            lo, hi = self.theta3_bounds
            self._table = ExpConvTable(self._ref_form, self.timing, lo, hi)
        return self._table

    def _settings(self) -> dict[str, Any]:
        return {"theta3_bounds": list(self.theta3_bounds), "n_basis": self.n_basis,
                "k2prime": self.k2prime, "continuous_form": "mean-preserving piecewise linear"}

    def _design(self, theta: NDArray) -> tuple[NDArray, NDArray]:
        """Regressors for the grid (G, n): (C_R, B) or, with fixed k2', C_R + (k2'-th) B."""
        b = self.basis if theta is self.theta_grid else self.table(theta)
        if self.k2prime is None:
            return self.ref, b
        return self.ref + (self.k2prime - theta)[:, None] * b, b

    def _grid_basis(self, w: NDArray) -> tuple[NDArray, NDArray]:
        """Weighted, orthonormalised grid regressors for shared weights ``w`` (n,).

        For each grid theta the regressor that carries theta (``B``, or
        ``C_R + (k2' - theta) B`` with fixed k2') is made W-orthogonal to the
        reference curve (when R1 is free) and scaled to unit W-norm; then the
        weighted residual of the grid point is ``const - (y' W x_g)^2`` and the
        search is one matrix product and an arg-max (no per-curve solve).
        Returns ``(W X)`` as float32 (n, G) for the search and float64 (G, n).
        """
        key = w.tobytes()
        cached = self.__dict__.get("_gb")
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        x0, b = self._design(self.theta_grid)
        if self.k2prime is None:
            wr = w * self.ref
            xg = b - np.outer(b @ wr / (wr @ self.ref), self.ref)
        else:
            xg = x0
        with np.errstate(divide="ignore", invalid="ignore"):
            xg = xg / np.sqrt(np.sum(w * xg * xg, axis=-1))[:, None]
        wx = np.nan_to_num(w * xg)
        out = (np.ascontiguousarray(wx.T, dtype=np.float32), wx)
        self.__dict__["_gb"] = (key, *out)
        return out

    def _grid_search(self, y: NDArray, w: NDArray, refine: bool) -> tuple[NDArray, NDArray]:
        """Best basis function per curve (Gunn 1997), refined by a parabola in ln theta3.

        Returns theta3 (V,) and a flag (V,) that the optimum lies on the grid's edge.
        """
        g = self.theta_grid
        u = np.log(g)
        v = y.shape[0]
        theta = np.empty(v)
        edge = np.empty(v, dtype=bool)
        shared = w.ndim == 1
        if shared:
            wx32, wx = self._grid_basis(w)
        else:
            x0, b = self._design(g)
        fixed = self.k2prime is not None
        for s in range(0, v, _CHUNK):
            sl = slice(s, s + _CHUNK)
            yc = y[sl]
            if shared:
                z = yc.astype(np.float32) @ wx32                 # (V, G)
                np.abs(z, out=z)
                k = np.argmax(z, axis=1)

                def score(kk: NDArray, yc: NDArray = yc) -> NDArray:
                    return np.einsum("vn,vn->v", yc, wx[kk]) ** 2
            else:
                wc = w[sl]
                wy = wc * yc
                if fixed:
                    z = wy @ x0.T
                    c = wc @ (x0 * x0).T
                    q = z * z / c
                else:
                    z1 = (wy @ x0)[:, None]
                    a = (wc @ (x0 * x0))[:, None]
                    z2 = wy @ b.T
                    bb = (wc * x0) @ b.T
                    c = wc @ (b * b).T
                    q = (c * z1 * z1 - 2.0 * bb * z1 * z2 + a * z2 * z2) / (a * c - bb * bb)
                q = np.where(np.isfinite(q), q, -np.inf)
                k = np.argmax(q, axis=1)
                rows = np.arange(k.size)

                def score(kk: NDArray, q: NDArray = q, rows: NDArray = rows) -> NDArray:
                    return q[rows, kk]
            edge[sl] = (k == 0) | (k == g.size - 1)
            uk = u[k]
            if refine:
                kk = np.clip(k, 1, g.size - 2)
                f0, f1, f2 = score(kk - 1), score(kk), score(kk + 1)
                u0, u1, u2 = u[kk - 1], u[kk], u[kk + 1]
                num = (u1 - u0) ** 2 * (f1 - f2) - (u1 - u2) ** 2 * (f1 - f0)
                den = (u1 - u0) * (f1 - f2) - (u1 - u2) * (f1 - f0)
                ur = u1 - 0.5 * num / den
                good = ~edge[sl] & np.isfinite(ur)
                uk = np.where(good, np.clip(ur, u0, u2), uk)
            theta[sl] = np.exp(uk)
        return theta, edge

    def _linear_at(self, y: NDArray, w: NDArray, theta: NDArray,
                   b: NDArray | None = None) -> NDArray:
        """Linear parameters at given theta3: (R1, theta2) or (R1,) with fixed k2'."""
        b = self.table(theta) if b is None else b                # (V, n)
        wy = w * y
        if self.k2prime is not None:
            x = self.ref + (self.k2prime - theta)[:, None] * b
            return (np.einsum("vn,vn->v", wy, x) / np.einsum("vn,vn->v", w * x, x))[:, None]
        wr = w * self.ref
        a11 = np.sum(wr * self.ref, axis=-1)
        a12 = np.einsum("vn,vn->v", np.broadcast_to(wr, b.shape), b)
        a22 = np.einsum("vn,vn->v", w * b, b)
        r1 = np.sum(wy * self.ref, axis=-1)
        r2 = np.einsum("vn,vn->v", wy, b)
        det = a11 * a22 - a12 * a12
        return np.stack([(a22 * r1 - a12 * r2) / det, (a11 * r2 - a12 * r1) / det], axis=1)

    def _model_jac(self, p: NDArray, jac: bool = True,
                   bdb: tuple[NDArray, NDArray] | None = None) -> tuple[NDArray, list[NDArray]]:
        """Prediction (V, n) and Jacobian columns (each (n,) shared or (V, n)) at ``p``.

        ``bdb``: the convolution and its theta3-derivative at ``p`` if already
        known (they are modified in place).
        """
        theta = p[:, -1]
        if not jac:
            b = self.table(theta)
            if self.k2prime is None:
                return p[:, :1] * self.ref + p[:, 1:2] * b, []
            return p[:, :1] * (self.ref + (self.k2prime - theta)[:, None] * b), []
        b, db = self.table(theta, derivative=True) if bdb is None else bdb
        if self.k2prime is None:
            f = p[:, 1:2] * b
            f += p[:, :1] * self.ref
            db *= p[:, 1:2]
            return f, [self.ref, b, db]
        kk = (self.k2prime - theta)[:, None]
        x = kk * b
        x += self.ref
        db *= kk
        db -= b
        db *= p[:, :1]
        return p[:, :1] * x, [x, db]

    def _outputs(self, p: NDArray, y: NDArray, w: NDArray, ok: NDArray,
                 at_bound: NDArray, bdb: tuple[NDArray, NDArray] | None = None,
                 normal: tuple[NDArray, NDArray] | None = None) -> _Result:
        """Named parameters, fitted curves and delta-method standard errors.

        ``bdb``: convolution (and derivative) at ``p`` when already computed.
        ``normal``: ``(J'WJ (V, P, P), sigma^2 (V,))`` when already computed
        (BF-SRTM's blocked kernel); then nothing of shape (V, n) is formed
        here and the fitted curves are computed on first access.
        """
        theta = p[:, -1]
        r1 = p[:, 0]
        if normal is not None:
            bdb = None
        elif bdb is None:
            bdb = self.table(theta, derivative=True) if self.compute_se \
                else (self.table(theta), None)

        def conv() -> NDArray:
            if bdb is not None:
                return bdb[0]
            # invalid curves (NaN theta3 after masking) get any rate; their rows are masked
            return self.table(np.where(np.isfinite(theta), theta, self.theta3_bounds[0]))

        if self.k2prime is None:
            t2 = p[:, 1]

            def fitted() -> NDArray:
                return r1[:, None] * self.ref + t2[:, None] * conv()

            k2 = t2 + r1 * theta
            bp = t2 / theta + r1 - 1.0
        else:
            k2p = self.k2prime

            def fitted() -> NDArray:
                return r1[:, None] * (self.ref + (k2p - theta)[:, None] * conv())

            k2 = r1 * self.k2prime
            bp = k2 / theta - 1.0
        # k2' and DVR are derived from these (the catalogue's K2PRIME and DVR)
        params = {"bp_nd": bp, "r1": r1, "k2": k2, "k2a": theta}
        se: dict[str, NDArray] = {}
        pred: NDArray | Callable[[], NDArray] = fitted
        if self.compute_se:
            if normal is None:
                assert bdb is not None
                _, cols = self._model_jac(p, bdb=bdb)
                a, _ = normal_equations(cols, w)
                pred = fitted()
                s2 = _sigma2(y - pred, w, p.shape[1])
            else:
                a, s2 = normal
            # delta method: var(f) = s^2 g' (J'WJ)^-1 g for the gradient g of f
            if self.k2prime is None:
                t2 = p[:, 1]
                g_bp = [1, 1.0 / theta, -t2 / theta**2]
                g_k2 = [theta, 1, r1]
                g_r1 = [1, 0, 0]
            else:
                g_bp = [self.k2prime / theta, -k2 / theta**2]
                g_k2 = [self.k2prime, 0]
                g_r1 = [1, 0]
            with np.errstate(invalid="ignore"):
                q_bp, q_r1, q_k2 = (np.sqrt(q * s2)
                                    for q in _quad_inv(a, [g_bp, g_r1, g_k2]))
            se = {"bp_nd": q_bp, "r1": q_r1, "k2": q_k2}
        valid = ok & ~at_bound & np.isfinite(bp) & (k2 > 0) & (r1 > 0)
        return _Result(params, se, pred, valid, {"at_bound": at_bound},
                       bound={"k2a": at_bound})


class BFSRTM(_SRTMBase):
    """Basis-function SRTM (Gunn et al. 1997), optionally with fixed k2'.

    For each ``theta3 = k2 / (1 + BP_ND)`` on a log-spaced grid the SRTM is
    linear: ``C_T = R1 C_R + theta2 B(theta3)`` with
    ``B = C_R (*) exp(-theta3 t)`` (frame-averaged exactly); the grid point
    with the least weighted residual wins. With ``k2prime`` fixed,
    ``k2 = R1 k2'`` and ``C_T = R1 [C_R + (k2' - theta3) B]`` (one linear
    parameter). With ``refine`` (default) the optimum is refined by a
    parabola through the residuals of the three neighbouring grid points in
    ``ln theta3`` and the linear parameters re-solved there. A curve whose
    optimum lies on the first or last grid point is invalid.

    Parameters
    ----------
    theta3_bounds : (float, float)
        Grid range in 1/min (default 0.001-2.0).
    n_basis : int
        Number of grid points, log-spaced over the range (default 100).
    theta3_grid : array_like, optional
        An explicit grid (1/min) instead of ``theta3_bounds`` / ``n_basis``.
    k2prime : float, optional
        Fixed reference efflux rate k2' (1/min).
    refine : bool
        Parabolic refinement between grid points.
    compute_se : bool
        Asymptotic standard errors from the SRTM Jacobian at the solution.

    Output parameters: ``bp_nd``, ``r1``, ``k2``, ``k2a`` (= theta3),
    ``k2prime`` (= k2 / R1, or the fixed value), ``dvr``.
    """

    name = "bfsrtm"
    n_params = 3
    screens = True

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, refine: bool = True,
                 **kw: Any) -> None:
        super().__init__(timing, ref, **kw)
        self.refine = bool(refine)
        if self.k2prime is not None:
            self.n_params = 2  # type: ignore[misc]

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "refine": self.refine}

    def _fit(self, y: NDArray, w: NDArray) -> _Result:
        if w.ndim == 1:
            return self._fit_shared(y, w)
        theta, edge = self._grid_search(y, w, self.refine)
        bdb = self.table(theta, derivative=True) if self.compute_se \
            else (self.table(theta), None)
        coef = self._linear_at(y, w, theta, bdb[0])
        p = np.concatenate([coef, theta[:, None]], axis=1)
        return self._outputs(p, y, w, np.ones(y.shape[0], dtype=bool), edge, bdb)

    def _fit_shared(self, y: NDArray, w: NDArray) -> _Result:
        """Shared weights: search, refinement, linear solve and the sums of the
        standard errors, block by block (:data:`_BF_BLOCK` curves in cache).

        ``y`` may be float32 and in any layout (the raw voxel view); each block
        is cast to float64 once. At the linear least-squares solution for the
        refined theta3 the weighted residual sum of squares is
        ``y'Wy - c'X'Wy`` (``c`` the linear parameters, ``X`` their
        regressors), so no residual or fitted curve is formed; the
        Jacobian's normal matrix is built from the same sums.
        """
        v = y.shape[0]
        n_p = 3 if self.k2prime is None else 2
        dwin = self.timing.duration * self.window
        wr = w * self.ref
        a11 = float(wr @ self.ref)
        lin = np.stack([wr, dwin, np.ones_like(w)], axis=1)          # (n, 3)
        dof = int(np.count_nonzero(w > 0)) - n_p
        theta = np.empty(v)
        edge = np.empty(v, dtype=bool)
        coef = np.empty((v, n_p - 1))
        a = np.empty((v, n_p, n_p))
        s2 = np.empty(v)
        signal = np.empty(v)
        total = np.empty(v)
        for s in range(0, v, _BF_BLOCK):
            sl = slice(s, min(s + _BF_BLOCK, v))
            yb = np.ascontiguousarray(y[sl], dtype=np.float64)
            th, edge[sl] = self._grid_search(yb, w, self.refine)
            theta[sl] = th
            sums = yb @ lin                                             # (B, 3)
            yr, signal[sl], total[sl] = sums[:, 0], sums[:, 1], sums[:, 2]
            yy = np.einsum("vn,vn->v", yb * w, yb)
            if self.compute_se:
                b, db = self.table(th, derivative=True)
            else:
                b, db = self.table(th), None
            if self.k2prime is None:
                wb = b * w
                a12 = b @ wr
                a22 = np.einsum("vn,vn->v", wb, b)
                yb_ = np.einsum("vn,vn->v", wb, yb)
                det = a11 * a22 - a12 * a12
                r1 = (a22 * yr - a12 * yb_) / det
                t2 = (a11 * yb_ - a12 * yr) / det
                coef[sl, 0], coef[sl, 1] = r1, t2
                wrss = yy - r1 * yr - t2 * yb_
                if db is not None:
                    # Jacobian columns (C_R, B, theta2 dB/dtheta3)
                    a[sl, 0, 0] = a11
                    a[sl, 0, 1] = a[sl, 1, 0] = a12
                    a[sl, 1, 1] = a22
                    a[sl, 0, 2] = a[sl, 2, 0] = t2 * (db @ wr)
                    a[sl, 1, 2] = a[sl, 2, 1] = t2 * np.einsum("vn,vn->v", wb, db)
                    a[sl, 2, 2] = t2 * t2 * np.einsum("vn,vn->v", db * w, db)
            else:
                kk = (self.k2prime - th)[:, None]
                x = b * kk
                x += self.ref
                wx_ = x * w
                xx = np.einsum("vn,vn->v", wx_, x)
                xy = np.einsum("vn,vn->v", wx_, yb)
                r1 = xy / xx
                coef[sl, 0] = r1
                wrss = yy - r1 * xy
                if db is not None:
                    # Jacobian columns (x, R1 d x / d theta3 = R1 ((k2' - theta3) dB - B))
                    db *= kk
                    db -= b
                    db *= r1[:, None]
                    a[sl, 0, 0] = xx
                    a[sl, 0, 1] = a[sl, 1, 0] = np.einsum("vn,vn->v", wx_, db)
                    a[sl, 1, 1] = np.einsum("vn,vn->v", db * w, db)
            s2[sl] = np.maximum(wrss, 0.0) / dof if dof > 0 else np.nan
        p = np.concatenate([coef, theta[:, None]], axis=1)
        res = self._outputs(p, y, w, np.ones(v, dtype=bool), edge, normal=(a, s2))
        res.screen = (signal, total)
        return res


class SRTM(_SRTMBase):
    """Simplified reference tissue model (Lammertsma & Hume 1996), non-linear.

    ``C_T = R1 C_R + (k2 - R1 k2 / (1 + BP_ND)) C_R (*) exp(-k2 t / (1 + BP_ND))``,
    frame-averaged exactly. Fitted by a batched, bounded Levenberg-Marquardt
    on ``(R1, theta2 = k2 - R1 theta3, theta3)`` started from the refined
    basis-function solution; the convolution and its derivative in theta3
    come from a cubic-spline table over ``ln theta3`` built once per model
    from the exact kernel (relative error < 1e-8). Bounds: ``R1`` in ``r1_bounds``,
    ``theta3`` in ``theta3_bounds``; a solution on a theta3 bound is invalid.

    Output parameters: ``bp_nd``, ``r1``, ``k2``, ``k2a`` (= theta3),
    ``k2prime`` (= k2 / R1), ``dvr``; standard errors of ``bp_nd``, ``r1``,
    ``k2`` from the Jacobian (delta method).
    """

    name = "srtm"
    n_params = 3

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *,
                 r1_bounds: tuple[float, float] = R1_BOUNDS, max_iter: int = 50,
                 **kw: Any) -> None:
        super().__init__(timing, ref, **kw)
        self.r1_bounds = (float(r1_bounds[0]), float(r1_bounds[1]))
        self.max_iter = int(max_iter)
        if self.k2prime is not None:
            self.n_params = 2  # type: ignore[misc]

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "r1_bounds": list(self.r1_bounds),
                "max_iter": self.max_iter, "algorithm": "Levenberg-Marquardt from BF-SRTM"}

    def _fit(self, y: NDArray, w: NDArray) -> _Result:
        theta, _ = self._grid_search(y, w, refine=True)
        coef = self._linear_at(y, w, theta)
        p0 = np.concatenate([coef, theta[:, None]], axis=1)
        lo = np.full(p0.shape[1], -np.inf)
        hi = np.full(p0.shape[1], np.inf)
        lo[0], hi[0] = self.r1_bounds
        lo[-1], hi[-1] = self.theta3_bounds
        lm = levenberg_marquardt(lambda q, _idx: self._model_jac(q), y, p0, weights=w,
                                 lower=lo, upper=hi, max_iter=self.max_iter, ftol=1e-10,
                                 xtol=1e-12, lambda_down=1 / 0.3, lambda_max=1e8,
                                 jacobian=True, final=False)
        p, conv = lm.params, lm.converged
        tol = 1e-6
        at_bound = (p[:, -1] <= lo[-1] * (1 + tol)) | (p[:, -1] >= hi[-1] * (1 - tol))
        res = self._outputs(p, y, w, conv, at_bound)
        res.extra["converged"] = conv
        # R1 on its upper bound (its lower bound 0 is already invalid: R1 > 0)
        r1_at = p[:, 0] >= hi[0] * (1 - tol)
        res.bound = {**(res.bound or {}), "r1": r1_at}
        res.valid = res.valid & ~r1_at
        return res


class SRTM2(SRTM):
    """SRTM with fixed reference efflux k2' (Wu & Carson 2002): ``k2 = R1 k2'``.

    ``C_T = R1 [C_R + (k2' - theta3) C_R (*) exp(-theta3 t)]``, two parameters
    (``R1``, ``theta3``), fitted as :class:`SRTM`. ``k2prime`` (1/min) is
    required: from a high-binding region (:func:`estimate_k2prime`) or a
    first SRTM pass.
    """

    name = "srtm2"
    n_params = 2

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, k2prime: float,
                 **kw: Any) -> None:
        if k2prime is None:
            raise ModelError("srtm2 needs a fixed k2'", field="k2prime",
                             fix="give --k2prime VALUE (1/min) or --k2prime auto")
        super().__init__(timing, ref, k2prime=k2prime, **kw)


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


class MRTM(_Linearised):
    """Multilinear reference tissue model (Ichise et al. 2003), three parameters.

    Frame-averaged operational equation
    ``mean(C_T) = g1 J(C_R) + g2 J(C_T) + g3 mean(C_R)`` by weighted linear
    least squares over the window (the window's start plays the role of t*).
    ``BP_ND = -(g1 / g2 + 1)``, ``R1 = g3``, ``k2 = g1``, ``k2' = g1 / g3``,
    ``k2a = -g2``.
    """

    name = "mrtm"
    n_params = 3
    screens = True

    def _normal_blocks(self, y: NDArray, w: NDArray
                       ) -> tuple[NDArray, NDArray, NDArray, tuple[NDArray, NDArray] | None]:
        """``X'WX`` (V, 3, 3), ``X'Wy`` (V, 3), ``y'Wy`` (V,) and the screening sums.

        ``X = [J(C_R), J(C_T), C_R]``; the entries that involve only the
        reference are shared by every curve. Shared weights: every per-curve
        sum from :meth:`_Linearised._frame_stats` (the MRTM2 kernel);
        per-curve weights: row blocks of the row-major float64 curves
        (screening sums None: the caller screens).
        """
        xr, cr = self.ref_int, self.ref
        v = y.shape[0]
        a = np.empty((v, 3, 3))
        b = np.empty((v, 3))
        if w.ndim == 1:
            wxr, wcr = w * xr, w * cr
            st = self._frame_stats(y, w, np.stack([self._jmat.T @ wxr, self._jmat.T @ wcr,
                                                   wxr, wcr]))
            a[:, 0, 0] = wxr @ xr
            a[:, 0, 2] = a[:, 2, 0] = wxr @ cr
            a[:, 2, 2] = wcr @ cr
            a[:, 1, 1], b[:, 1], yy = st[0], st[1], st[2]
            a[:, 0, 1] = a[:, 1, 0] = st[3]
            a[:, 1, 2] = a[:, 2, 1] = st[4]
            b[:, 0], b[:, 2] = st[5], st[6]
            return a, b, yy, (st[7], st[8])
        lt = np.ascontiguousarray(self._jmat.T)
        yy = np.empty(v)
        for s in range(0, v, _BLOCK):
            e = s + _BLOCK
            yb, wb = y[s:e], w[s:e]
            jt = yb @ lt
            jw = jt * wb
            a[s:e, 0, 0] = wb @ (xr * xr)
            a[s:e, 0, 2] = a[s:e, 2, 0] = wb @ (xr * cr)
            a[s:e, 2, 2] = wb @ (cr * cr)
            a[s:e, 0, 1] = a[s:e, 1, 0] = jw @ xr
            a[s:e, 1, 2] = a[s:e, 2, 1] = jw @ cr
            a[s:e, 1, 1] = np.einsum("vn,vn->v", jw, jt)
            b[s:e, 1] = np.einsum("vn,vn->v", jw, yb)
            wy = np.multiply(yb, wb, out=jw)
            b[s:e, 0] = wy @ xr
            b[s:e, 2] = wy @ cr
            yy[s:e] = np.einsum("vn,vn->v", wy, yb)
        return a, b, yy, None

    def _fit(self, y: NDArray, w: NDArray) -> _Result:
        a, rhs, yy, screen = self._normal_blocks(y, w)
        inv = inv_sym(a)
        g = np.einsum("vij,vj->vi", inv, rhs)
        dof = np.sum(np.broadcast_to(w > 0, y.shape[-1:] if w.ndim == 1 else y.shape),
                     axis=-1) - 3
        # at the least-squares solution WRSS = y'Wy - g'X'Wy (no residual array needed)
        wrss = np.maximum(yy - np.einsum("vi,vi->v", g, rhs), 0.0)
        cov = inv * (np.where(dof > 0, wrss / np.maximum(dof, 1), np.nan))[:, None, None]

        def fitted() -> NDArray:
            return (g[:, :1] * self.ref_int + g[:, 1:2] * self._target_int(y)
                    + g[:, 2:] * self.ref)

        g1, g2, g3 = g[:, 0], g[:, 1], g[:, 2]
        bp = -(g1 / g2 + 1.0)
        params = {"bp_nd": bp, "r1": g3, "k2": g1, "k2a": -g2}  # k2', DVR derived
        zero = np.zeros_like(g1)
        se = {"bp_nd": _se_of(np.stack([-1.0 / g2, g1 / g2**2, zero], -1), cov),
              "r1": np.sqrt(cov[:, 2, 2]), "k2": np.sqrt(cov[:, 0, 0]),
              "k2prime": _se_of(np.stack([1.0 / g3, zero, -g1 / g3**2], -1), cov)}
        valid = np.isfinite(bp) & (g2 < 0)
        return _Result(params, se, fitted, valid, screen=screen)


class MRTM2(_Linearised):
    """MRTM with fixed k2' (Ichise et al. 2003), two parameters.

    ``mean(C_T) = g1 [J(C_R) + mean(C_R) / k2'] + g2 J(C_T)``;
    ``BP_ND = -(g1 / g2 + 1)``, ``k2 = g1``, ``R1 = g1 / k2'``, ``k2a = -g2``.
    Solved in closed form (2 x 2 normal equations) for every curve at once.
    """

    name = "mrtm2"
    n_params = 2
    screens = True

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, k2prime: float,
                 **kw: Any) -> None:
        if k2prime is None or not (np.isfinite(k2prime) and k2prime > 0):
            raise ModelError(f"mrtm2 needs a positive fixed k2', got {k2prime}",
                             field="k2prime", fix="give --k2prime VALUE (1/min) or auto")
        super().__init__(timing, ref, **kw)
        self.k2prime = float(k2prime)
        self.x1 = self.ref_int + self.ref / self.k2prime

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "k2prime": self.k2prime}

    def _fit(self, y: NDArray, w: NDArray) -> _Result:
        x1 = self.x1
        screen = None
        if w.ndim == 1:
            wx1 = w * x1
            a11 = float(wx1 @ x1)
            st = self._frame_stats(y, w, np.stack([self._jmat.T @ wx1, wx1]))
            a22, b2, yy, a12, b1 = st[:5]
            screen = (st[5], st[6])
            dof = int(np.count_nonzero(w > 0)) - 2
            jt = None
        else:
            jt = self._target_int(y)
            wx1 = w * x1
            a11 = np.sum(wx1 * x1, axis=-1)
            wjt = w * jt
            a12 = np.sum(wjt * x1, axis=-1)
            a22 = np.einsum("vn,vn->v", wjt, jt)
            b1 = np.sum(wx1 * y, axis=-1)
            b2 = np.einsum("vn,vn->v", wjt, y)
            yy = np.einsum("vn,vn->v", w * y, y)
            dof = np.sum(w > 0, axis=-1) - 2
        # closed-form 2 x 2 solve; element-wise work on (V,) arrays, in place where
        # possible (it is a fifth of the voxel path's time)
        det = a11 * a22
        det -= a12 * a12
        inv_det = np.divide(1.0, det, out=det)
        g1 = a22 * b1
        g1 -= a12 * b2
        g1 *= inv_det
        g2 = a11 * b2
        g2 -= a12 * b1
        g2 *= inv_det
        # at the least-squares solution WRSS = y'Wy - g'X'Wy (no residual array needed);
        # s2 / det below is var(g1) / a22 etc.
        s2 = yy - g1 * b1
        s2 -= g2 * b2
        np.maximum(s2, 0.0, out=s2)
        s2 *= inv_det
        if np.ndim(dof) == 0:
            s2 *= 1.0 / dof if dof > 0 else np.nan
        else:
            s2 *= np.where(dof > 0, 1.0 / np.maximum(dof, 1), np.nan)

        def fitted() -> NDArray:
            return g2[:, None] * (self._target_int(y) if jt is None else jt) + g1[:, None] * x1

        # BP_ND = -(q + 1), q = g1 / g2; delta method with gradient (-1/g2, g1/g2^2):
        # var(BP_ND) = s2 / det * (a22 + 2 q a12 + q^2 a11) / g2^2
        q = g1 / g2
        bp = -1.0 - q
        var_bp = q * a11
        var_bp += 2.0 * a12
        var_bp *= q
        var_bp += a22
        var_bp *= s2
        var_bp /= g2 * g2
        se_k2 = np.sqrt(a22 * s2)
        params = {"bp_nd": bp, "r1": g1 / self.k2prime, "k2": g1, "k2a": -g2}  # k2', DVR derived
        se = {"bp_nd": np.sqrt(var_bp, out=var_bp), "r1": se_k2 / self.k2prime, "k2": se_k2}
        valid = np.isfinite(bp) & (g2 < 0)
        return _Result(params, se, fitted, valid, screen=screen)


class LoganRef(_Linearised):
    """Logan reference-region graphical analysis, with or without the k2' term (Logan 1996).

    For frames after t*:
    ``J(C_T)/mean(C_T) = DVR [J(C_R) + mean(C_R)/k2'] / mean(C_T) + b``,
    fitted by weighted linear regression; ``BP_ND = DVR - 1``. (For one-tissue
    target and reference the frame-averaged relation is exact with
    ``b = -1/k2a``.) With ``k2prime=None`` the ``mean(C_R)/k2'`` term is
    dropped: ``J(C_T)/mean(C_T) = DVR J(C_R)/mean(C_T) + b'``, the usual
    variant for [11C]PiB (tpcclib ``logan``, tacmagic, dynamicpet), which
    holds once ``C_R / C_T`` is constant (Logan et al. 1996): exact for curves
    in a constant ratio, otherwise biased while that ratio still drifts.
    ``tstar`` (minutes): frames starting at or after it are used; if None, t*
    is chosen per curve as the earliest frame start from which, with at least
    ``min_points`` frames, the largest relative deviation of the plot from its
    regression line is at most ``max_error`` (default 10 %; Ichise et al. 2002,
    as in PMOD's Logan plot).

    Output parameters: ``dvr``, ``bp_nd``, ``intercept`` (min), ``tstar`` (min).
    ``fitted`` is the target curve implied by the line
    (``(J(C_T) - DVR X) / b``), as for MRTM. Frames with ``C_T <= 0`` are left
    out of the plot (the ratio is undefined there).
    """

    name = "logan"
    n_params = 2
    min_frames = 3

    def __init__(self, timing: FrameTiming, ref: ArrayLike, *, k2prime: float | None = None,
                 tstar: float | None = None, max_error: float = 0.10, min_points: int = 3,
                 **kw: Any) -> None:
        if k2prime is not None and not (np.isfinite(k2prime) and k2prime > 0):
            raise ModelError(f"logan needs a positive k2' (or none), got {k2prime}",
                             field="k2prime",
                             fix="give --k2prime VALUE (1/min), auto, or leave it out")
        super().__init__(timing, ref, **kw)
        self.k2prime = None if k2prime is None else float(k2prime)
        self.tstar = None if tstar is None else float(tstar)
        self.max_error = float(max_error)
        self.min_points = int(min_points)
        if self.tstar is not None:
            window_mask(timing, max(self.tstar, self.start or self.tstar), self.end,
                        min_frames=self.min_points)
        self.xnum = self.ref_int if self.k2prime is None \
            else self.ref_int + self.ref / self.k2prime

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "k2prime": self.k2prime,
                "k2prime_term": self.k2prime is not None, "tstar_min": self.tstar,
                "tstar_rule": "given" if self.tstar is not None else
                f"earliest start with max relative error <= {self.max_error:g}",
                "min_points": self.min_points}

    @staticmethod
    def _line(x: NDArray, yy: NDArray, w: NDArray) -> tuple[NDArray, ...]:
        sw = np.sum(w, -1)
        mx = np.sum(w * x, -1) / sw
        my = np.sum(w * yy, -1) / sw
        dx = x - mx[:, None]
        sxx = np.sum(w * dx * dx, -1)
        slope = np.sum(w * dx * (yy - my[:, None]), -1) / sxx
        icpt = my - slope * mx
        return slope, icpt, sxx, sw, mx

    def _fit(self, y: NDArray, w: NDArray) -> _Result:
        jt = self._target_int(y)
        pos = y > 0
        safe = np.where(pos, y, 1.0)
        x = np.where(pos, self.xnum / safe, 0.0)
        yy = np.where(pos, jt / safe, 0.0)
        wb = np.where(pos, w, 0.0)
        n = self.timing.n_frames
        start = self.timing.start
        if self.tstar is not None:
            k_sel = np.full(y.shape[0], int(np.searchsorted(start, self.tstar - 1e-4)))
        else:
            k_sel = np.full(y.shape[0], -1)
            ww = wb * self.window
            # suffix sums over frames >= k give every candidate line at once
            sums = [np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
                    for a in (ww, ww * x, ww * yy, ww * x * x, ww * x * yy)]
            frames = np.arange(n)
            act = np.arange(y.shape[0])
            for k in np.flatnonzero(self.window):
                if act.size == 0 or (self.window & (frames >= k)).sum() < self.min_points:
                    break
                sw, sx, sy, sxx, sxy = (a[act, k] for a in sums)
                slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
                icpt = (sy - slope * sx) / sw
                ua = ww[act, k:] > 0
                ya = yy[act, k:]
                rel = np.abs(ya - slope[:, None] * x[act, k:] - icpt[:, None]) \
                    / np.where(ua, np.abs(ya), 1.0)
                err = np.max(np.where(ua, rel, 0.0), axis=-1)
                pick = (err <= self.max_error) & (ua.sum(-1) >= self.min_points)
                k_sel[act[pick]] = k
                act = act[~pick]
            k_sel = np.where(k_sel < 0, n, k_sel)
        use = (np.arange(n)[None, :] >= k_sel[:, None]) & self.window & pos
        wk = wb * use
        slope, icpt, sxx, sw, mx = self._line(x, yy, wk)
        pred = slope[:, None] * x + icpt[:, None]
        s2 = _sigma2(np.where(use, yy - pred, 0.0), wk, 2)
        se_slope = np.sqrt(s2 / sxx)
        se_icpt = np.sqrt(s2 * (1.0 / sw + mx * mx / sxx))
        fitted = np.where(use, (jt - slope[:, None] * self.xnum) / icpt[:, None], np.nan)
        tstar = np.where(k_sel < n, start[np.minimum(k_sel, n - 1)], np.nan)
        params = {"dvr": slope, "intercept": icpt, "tstar": tstar}  # BP_ND = DVR - 1 derived
        se = {"bp_nd": se_slope, "dvr": se_slope, "intercept": se_icpt}
        npts = np.sum(use, -1)
        valid = np.isfinite(slope) & (npts >= self.min_points)
        return _Result(params, se, fitted, valid, {"logan_x": x, "logan_y": yy, "used": use})
