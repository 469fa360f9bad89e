"""The SRTM family: SRTM (non-linear), SRTM2 (fixed k2'), basis-function SRTM.

Predictions are exact frame averages of the continuous model (see
:mod:`petbind.models.reference`). Lammertsma & Hume 1996; Wu & Carson 2002;
Gunn et al. 1997.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.models.reference.common import (
    _BF_BLOCK,
    _CHUNK,
    N_BASIS,
    R1_BOUNDS,
    THETA3_BOUNDS,
    ReferenceModel,
    Result,
    _quad_inv,
    _sigma2,
)
from petbind.numerics.convolution import (
    ExpConvTable,
)
from petbind.numerics.optimize import levenberg_marquardt, normal_equations
from petbind.timing import FrameTiming


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
                 normal: tuple[NDArray, NDArray] | None = None) -> Result:
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
        return Result(params, se, pred, valid, {"at_bound": at_bound},
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

    def _fit(self, y: NDArray, w: NDArray) -> Result:
        if w.ndim == 1:
            return self._fit_shared(y, w)
        theta, edge = self._grid_search(y, w, self.refine)
        bdb = self.table(theta, derivative=True) if self.compute_se \
            else (self.table(theta), None)
        coef = self._linear_at(y, w, theta, bdb[0])
        p = np.concatenate([coef, theta[:, None]], axis=1)
        return self._outputs(p, y, w, np.ones(y.shape[0], dtype=bool), edge, bdb)

    def _fit_shared(self, y: NDArray, w: NDArray) -> Result:
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

    def _fit(self, y: NDArray, w: NDArray) -> Result:
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


