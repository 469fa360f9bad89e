"""MRTM and MRTM2: the multilinear reference tissue models (Ichise et al. 2003).

Operational equations averaged over each frame (see :mod:`petbind.models.reference`),
solved in closed form for every curve at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import ModelError
from petbind.models.reference.common import (
    _BLOCK,
    Result,
    _Linearised,
    _se_of,
)
from petbind.numerics.optimize import inv_sym
from petbind.timing import FrameTiming


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

    def _fit(self, y: NDArray, w: NDArray) -> Result:
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
        return Result(params, se, fitted, valid, screen=screen)


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

    def _fit(self, y: NDArray, w: NDArray) -> Result:
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
        return Result(params, se, fitted, valid, screen=screen)


