"""Batched, bounded Levenberg-Marquardt for many independent small fits.

One call fits a batch of ``B`` curves, each with the same ``P`` parameters,
by weighted non-linear least squares. Every curve keeps its own damping
factor, accepts or rejects its own steps and stops on its own; the work per
iteration is a few numpy operations over the whole batch (no per-curve Python
loop). Curves that have converged are dropped from the active set, so the
model is only evaluated for the curves still moving.

The model is a function ``predict(params, idx)``: ``params`` has shape
``(..., n_active, P)`` (any leading axes) and ``idx`` holds the batch indices
(``(n_active,)``) of the rows, so a model with per-curve inputs can pick them.
It returns predictions shaped ``(..., n_active, N)``. Without an analytic
Jacobian, a forward-difference Jacobian is formed by evaluating the model once
on a stack of ``P + 1`` parameter sets (leading axis), i.e. one model call per
iteration.

Bounds are kept by projection: a parameter sitting on a bound that the
gradient pushes outward is held there for the step, and each trial step is
clipped into ``[lower, upper]`` (a projected Levenberg-Marquardt; Kanzow,
Yamashita & Fukushima, J Comput Appl Math 2004;172:375-397). Standard errors come from the usual
asymptotic covariance ``s^2 (J^T W J)^-1`` with ``s^2 = WRSS / (n - P)``.

References
----------
Levenberg K. A method for the solution of certain non-linear problems in
least squares. Q Appl Math 1944;2:164-168.
Marquardt DW. An algorithm for least-squares estimation of nonlinear
parameters. J Soc Ind Appl Math 1963;11:431-441.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Predict = Callable[[NDArray, NDArray], NDArray]


@dataclass
class LMResult:
    """Result of :func:`levenberg_marquardt` for a batch of ``B`` fits.

    Attributes
    ----------
    params : ndarray, shape (B, P)
        Parameters at the solution.
    fitted : ndarray, shape (B, N)
        Model prediction at the solution.
    wrss : ndarray, shape (B,)
        Weighted residual sum of squares.
    cov : ndarray, shape (B, P, P)
        Asymptotic covariance ``s^2 (J^T W J)^-1`` (NaN where singular or
        where ``n_used <= P``).
    n_iter : ndarray of int, shape (B,)
        Iterations used.
    converged : ndarray of bool, shape (B,)
        True where a stopping test (not the iteration limit) ended the fit.
    """

    params: NDArray
    fitted: NDArray
    wrss: NDArray
    cov: NDArray
    n_iter: NDArray
    converged: NDArray

    @property
    def se(self) -> NDArray:
        """Standard errors, ``sqrt(diag(cov))``, shape (B, P)."""
        d = np.diagonal(self.cov, axis1=-2, axis2=-1)
        return np.sqrt(np.where(d >= 0, d, np.nan))


def _jacobian(predict: Predict, p: NDArray, idx: NDArray, lower: NDArray,
              upper: NDArray, f0: NDArray | None = None) -> tuple[NDArray, NDArray]:
    """Forward-difference Jacobian in one model call; returns (f(p), J (B, N, P))."""
    n_p = p.shape[-1]
    scale = np.maximum(np.abs(p), 1e-3)
    h = np.sqrt(np.finfo(float).eps) * scale
    # step away from an upper bound
    h = np.where(p + h > upper, -h, h)
    stack = np.broadcast_to(p, (n_p + 1,) + p.shape).copy()
    for k in range(n_p):
        stack[k + 1, :, k] += h[:, k]
    f = predict(stack, idx)
    f0 = f[0] if f0 is None else f0
    jac = (f[1:] - f[0][None]) / np.moveaxis(h, -1, 0)[:, :, None]
    return f0, np.moveaxis(jac, 0, -1)


def _covariance(jac: NDArray, w: NDArray, wrss: NDArray, n_used: NDArray) -> NDArray:
    n_p = jac.shape[-1]
    jtj = np.einsum("bnp,bn,bnq->bpq", jac, w, jac)
    dof = n_used - n_p
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(dof > 0, wrss / np.where(dof > 0, dof, 1), np.nan)
    out = np.full(jtj.shape, np.nan)
    ok = np.isfinite(jtj).all(axis=(-1, -2))
    if ok.any():
        cond = np.linalg.cond(jtj[ok])
        good = np.flatnonzero(ok)[cond < 1e14]
        if good.size:
            out[good] = np.linalg.inv(jtj[good]) * s2[good, None, None]
    return out


def levenberg_marquardt(
    predict: Predict,
    data: ArrayLike,
    p0: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    max_iter: int = 100,
    ftol: float = 1e-12,
    xtol: float = 1e-10,
    gtol: float = 1e-9,
    lambda0: float = 1e-3,
) -> LMResult:
    """Fit ``B`` curves at once by bounded, weighted Levenberg-Marquardt.

    Parameters
    ----------
    predict : callable
        ``predict(params, idx)`` with ``params`` shaped ``(..., n, P)`` and
        ``idx`` the batch indices ``(n,)`` of those rows; returns predictions
        ``(..., n, N)`` (same units as ``data``).
    data : array_like, shape (B, N)
        Curves to fit.
    p0 : array_like, shape (B, P) or (P,)
        Starting values (clipped into the bounds).
    weights : array_like, shape (B, N) or (N,), optional
        Non-negative weights (1/variance up to a factor); default 1.
    lower, upper : array_like, shape (P,) or (B, P), optional
        Bounds; default unbounded.
    max_iter : int
        Iteration limit per curve.
    ftol : float
        Stop when an accepted step lowers the WRSS by less than ``ftol``
        relative.
    xtol : float
        Stop when the accepted step is smaller than ``xtol`` relative to the
        parameters.
    gtol : float
        Stop when the scaled gradient ``max_k |g_k| max(|p_k|, 1e-3) / WRSS``
        is below ``gtol`` (a flat valley: further steps change nothing that
        the data can tell apart).
    lambda0 : float
        Initial damping (relative to the diagonal of ``J^T W J``).

    Returns
    -------
    LMResult
    """
    y = np.atleast_2d(np.asarray(data, dtype=float))
    n_b, n_n = y.shape
    p = np.array(np.broadcast_to(np.asarray(p0, dtype=float), (n_b, np.shape(p0)[-1])))
    n_p = p.shape[-1]
    w = np.broadcast_to(np.ones(n_n) if weights is None else np.asarray(weights, float),
                        (n_b, n_n))
    lo = np.broadcast_to(np.full(n_p, -np.inf) if lower is None else np.asarray(lower, float),
                         (n_b, n_p))
    hi = np.broadcast_to(np.full(n_p, np.inf) if upper is None else np.asarray(upper, float),
                         (n_b, n_p))
    p = np.clip(p, lo, hi)
    idx_all = np.arange(n_b)
    f, jac = _jacobian(predict, p, idx_all, lo, hi)
    wrss = np.sum(w * (y - f) ** 2, axis=-1)
    lam = np.full(n_b, lambda0)
    n_iter = np.zeros(n_b, dtype=int)
    converged = np.zeros(n_b, dtype=bool)
    active = np.isfinite(wrss)
    jac_all = jac
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        ja, wa, ra = jac_all[a], w[a], (y[a] - f[a])
        jtj = np.einsum("bnp,bn,bnq->bpq", ja, wa, ja)
        g = np.einsum("bnp,bn,bn->bp", ja, wa, ra)
        diag = np.diagonal(jtj, axis1=-2, axis2=-1)
        damp = lam[a, None] * np.maximum(diag, 1e-12 * np.max(diag, axis=-1, keepdims=True)
                                         + 1e-300)
        # parameters held at a bound by the gradient leave the step (active set)
        pa = p[a]
        held = ((pa <= lo[a]) & (g < 0)) | ((pa >= hi[a]) & (g > 0))
        free = (~held).astype(float)
        mat = (jtj * free[:, :, None] * free[:, None, :]
               + (damp * free + (1.0 - free))[..., None] * np.eye(n_p))
        g = g * free
        try:
            step = np.linalg.solve(mat, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.einsum("bpq,bq->bp", np.linalg.pinv(mat), g)
        trial = np.clip(p[a] + step, lo[a], hi[a])
        f_t = predict(trial, a)
        wrss_t = np.sum(wa * (y[a] - f_t) ** 2, axis=-1)
        better = np.isfinite(wrss_t) & (wrss_t <= wrss[a])
        n_iter[a] += 1
        dx = np.max(np.abs(trial - p[a]) / np.maximum(np.abs(p[a]), 1e-8), axis=-1)
        rel = (wrss[a] - wrss_t) / np.maximum(wrss[a], 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            sg = np.max(np.abs(g) * np.maximum(np.abs(pa), 1e-3), axis=-1) / wrss[a]
        done = (better & ((rel < ftol) | (dx < xtol))) | (sg < gtol)
        stuck = ~better & (lam[a] > 1e12)
        acc = a[better]
        if acc.size:
            p[acc] = trial[better]
            wrss[acc] = wrss_t[better]
            f0, jac_new = _jacobian(predict, p[acc], acc, lo[acc], hi[acc], f_t[better])
            f[acc] = f0
            jac_all[acc] = jac_new
        lam[a] = np.where(better, np.maximum(lam[a] / 10.0, 1e-12), lam[a] * 10.0)
        converged[a[done | stuck]] = True
        active[a[done | stuck]] = False
    n_used = np.sum(w > 0, axis=-1)
    cov = _covariance(jac_all, w, wrss, n_used)
    return LMResult(params=p, fitted=f, wrss=wrss, cov=cov, n_iter=n_iter,
                    converged=converged)
