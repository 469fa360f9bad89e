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
on a stack of ``P + 1`` parameter sets (leading axis), at accepted points
only. With ``jacobian=True`` the model returns ``(prediction, columns)``:
the ``P`` Jacobian columns, each either shared by every curve (shape
``(N,)``, e.g. the reference curve in SRTM) or per curve (``(n_active, N)``);
shared columns cost a matrix-vector product in the normal equations instead
of an element-wise pass, and the model is called once per iteration, at the
trial point. This one solver serves the plasma-input models, the blood-curve
fits and the reference-tissue SRTM family.

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
#: ``(params (n, P), idx (n,)) -> (prediction (n, N), [P Jacobian columns])``.
PredictJac = Callable[[NDArray, NDArray], tuple[NDArray, list[NDArray]]]


@dataclass
class LMResult:
    """Result of :func:`levenberg_marquardt` for a batch of ``B`` fits.

    Attributes
    ----------
    params : ndarray, shape (B, P)
        Parameters at the solution.
    fitted : ndarray, shape (B, N), or None
        Model prediction at the solution (None with ``final=False``).
    wrss : ndarray, shape (B,)
        Weighted residual sum of squares.
    cov : ndarray, shape (B, P, P), or None
        Asymptotic covariance ``s^2 (J^T W J)^-1`` (NaN where singular or
        where ``n_used <= P``; None with ``final=False``).
    n_iter : ndarray of int, shape (B,)
        Iterations used.
    converged : ndarray of bool, shape (B,)
        True where a stopping test (not the iteration limit) ended the fit.
    """

    params: NDArray
    fitted: NDArray | None
    wrss: NDArray
    cov: NDArray | None
    n_iter: NDArray
    converged: NDArray

    @property
    def se(self) -> NDArray:
        """Standard errors, ``sqrt(diag(cov))``, shape (B, P)."""
        if self.cov is None:
            return np.full(self.params.shape, np.nan)
        d = np.diagonal(self.cov, axis1=-2, axis2=-1)
        return np.sqrt(np.where(d >= 0, d, np.nan))


def inv_sym(a: NDArray) -> NDArray:
    """Inverse of stacked symmetric 1x1, 2x2 or 3x3 matrices by the adjugate (NaN if singular).

    A matrix is singular here when ``|det| <= 1e-13 max|a|^p``.
    """
    p = a.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if p == 1:
            return 1.0 / a
        if p == 2:
            det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] ** 2
            out = np.empty_like(a)
            out[..., 0, 0] = a[..., 1, 1]
            out[..., 1, 1] = a[..., 0, 0]
            out[..., 0, 1] = out[..., 1, 0] = -a[..., 0, 1]
        elif p == 3:
            c00 = a[..., 1, 1] * a[..., 2, 2] - a[..., 1, 2] ** 2
            c01 = a[..., 0, 2] * a[..., 1, 2] - a[..., 0, 1] * a[..., 2, 2]
            c02 = a[..., 0, 1] * a[..., 1, 2] - a[..., 0, 2] * a[..., 1, 1]
            c11 = a[..., 0, 0] * a[..., 2, 2] - a[..., 0, 2] ** 2
            c12 = a[..., 0, 1] * a[..., 0, 2] - a[..., 0, 0] * a[..., 1, 2]
            c22 = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] ** 2
            det = a[..., 0, 0] * c00 + a[..., 0, 1] * c01 + a[..., 0, 2] * c02
            out = np.stack([np.stack([c00, c01, c02], -1), np.stack([c01, c11, c12], -1),
                            np.stack([c02, c12, c22], -1)], -2)
        else:
            raise ValueError(p)
        scale = np.max(np.abs(a), axis=(-2, -1))
        det = np.where(np.abs(det) > 1e-13 * scale**p, det, np.nan)
        return out / det[..., None, None]


def _wdot(a: NDArray, b: NDArray, w: NDArray, wa: NDArray | None = None) -> NDArray:
    """``sum_n w a b`` over the last axis for shared (n,) or per-curve (V, n) vectors."""
    if a.ndim == 1 and b.ndim == 1:
        return np.sum(w * a * b, axis=-1)
    if a.ndim == 1 and w.ndim == 1:
        return b @ (w * a)
    if b.ndim == 1 and w.ndim == 1:
        return a @ (w * b)
    wa = w * a if wa is None else wa
    return np.einsum("vn,vn->v", np.broadcast_to(wa, np.broadcast_shapes(wa.shape, b.shape)),
                     np.broadcast_to(b, np.broadcast_shapes(wa.shape, b.shape)))


def normal_equations(cols: list[NDArray], w: NDArray, r: NDArray | None = None, *,
                     stacked: bool = False) -> tuple[NDArray, NDArray | None]:
    """Normal matrix ``J' W J`` (V, P, P) and, with ``r``, gradient ``J' W r`` (V, P).

    ``cols`` are the P Jacobian columns, each shared (``(N,)``) or per curve
    (``(V, N)``); ``w`` is ``(N,)`` or ``(V, N)``. Shared columns cost a
    matrix-vector product instead of an element-wise pass. ``stacked``
    (per-curve columns only): contract the stacked Jacobian (V, N, P) in one
    einsum, whose summation order does not depend on the batch's size or
    memory layout (slower; the finite-difference path uses it so that a
    curve's fit is bit-for-bit the same in any batch).
    """
    k = len(cols)
    if stacked:
        jac = np.stack(cols, axis=-1)
        wb = np.broadcast_to(w, jac.shape[:-1])
        a = np.einsum("bnp,bn,bnq->bpq", jac, wb, jac)
        return a, None if r is None else np.einsum("bnp,bn,bn->bp", jac, wb, r)
    v = max((c.shape[0] for c in cols if c.ndim == 2), default=1)
    if w.ndim == 2:
        v = max(v, w.shape[0])
    wcols = [None if c.ndim == 1 else w * c for c in cols]
    a = np.empty((v, k, k))
    for i in range(k):
        for j in range(i, k):
            ci, cj = (cols[i], cols[j]) if cols[i].ndim == 2 or cols[j].ndim == 1 \
                else (cols[j], cols[i])
            wi = wcols[i] if ci is cols[i] else wcols[j]
            a[:, i, j] = a[:, j, i] = _wdot(ci, cj, w, wi)
    if r is None:
        return a, None
    g = np.empty((v, k))
    for i in range(k):
        c = cols[i]
        g[:, i] = r @ (w * c) if (c.ndim == 1 and w.ndim == 1) else \
            np.einsum("vn,vn->v", wcols[i] if c.ndim == 2 else w * c, r)
    return a, g


def _rowmax(x: NDArray) -> NDArray:
    """Maximum over the last (short) axis of (B, P): P element-wise maxima of columns."""
    return np.maximum.reduce(x.T) if x.shape[-1] > 1 else x[:, 0].copy()


def _solve(mat: NDArray, g: NDArray) -> NDArray:
    """Solve stacked small systems ``mat x = g`` (closed form up to 3 x 3)."""
    if mat.shape[-1] <= 3:
        return np.einsum("bij,bj->bi", inv_sym(mat), g)
    try:
        return np.linalg.solve(mat, g[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.einsum("bpq,bq->bp", np.linalg.pinv(mat), g)


def _jacobian(predict: Predict, p: NDArray, idx: NDArray, lower: NDArray,
              upper: NDArray, f0: NDArray | None = None) -> tuple[NDArray, list[NDArray]]:
    """Forward-difference Jacobian in one model call; returns (f(p), P columns (B, N))."""
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
    return f0, [(f[k + 1] - f[0]) / h[:, k:k + 1] for k in range(n_p)]


def _covariance(cols: list[NDArray], w: NDArray, wrss: NDArray, n_used: NDArray,
                stacked: bool) -> NDArray:
    jtj, _ = normal_equations(cols, w, stacked=stacked)
    n_p = jtj.shape[-1]
    dof = n_used - n_p
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(dof > 0, wrss / np.where(dof > 0, dof, 1), np.nan)
    out = np.full(jtj.shape, np.nan)
    ok = np.isfinite(jtj).all(axis=(-1, -2))
    if ok.any():
        cond = np.linalg.cond(jtj[ok])
        good = np.flatnonzero(ok)[cond < 1e14]
        if good.size:
            out[good] = np.linalg.inv(jtj[good]) * np.broadcast_to(s2, ok.shape)[good,
                                                                                None, None]
    return out


def levenberg_marquardt(
    predict: Predict | PredictJac,
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
    lambda_down: float = 10.0,
    lambda_max: float = 1e12,
    jacobian: bool = False,
    final: bool = True,
) -> LMResult:
    """Fit ``B`` curves at once by bounded, weighted Levenberg-Marquardt.

    Parameters
    ----------
    predict : callable
        ``predict(params, idx)`` with ``params`` shaped ``(..., n, P)`` and
        ``idx`` the batch indices ``(n,)`` of those rows; returns predictions
        ``(..., n, N)`` (same units as ``data``). With ``jacobian=True``,
        ``params`` is ``(n, P)`` and it returns ``(prediction (n, N),
        columns)``, the P Jacobian columns, each ``(N,)`` (shared) or ``(n, N)``.
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
    lambda_down : float
        Divisor of the damping after an accepted step (a rejected step
        multiplies it by 10).
    lambda_max : float
        A curve whose damping exceeds this after a rejected step stops: no
        step lowers its WRSS any more (counted as converged).
    jacobian : bool
        ``predict`` returns the analytic Jacobian columns too (see above).
    final : bool
        Compute ``fitted`` and ``cov`` at the solution (one more model call
        with the Jacobian); False leaves them None.

    Returns
    -------
    LMResult
    """
    y = np.atleast_2d(np.asarray(data, dtype=float))
    n_b, n_n = y.shape
    p = np.array(np.broadcast_to(np.asarray(p0, dtype=float), (n_b, np.shape(p0)[-1])))
    n_p = p.shape[-1]
    w = np.ones(n_n) if weights is None else np.asarray(weights, dtype=float)
    w = np.broadcast_to(w, (n_b, n_n)) if w.ndim == 2 else w
    lo = np.full(n_p, -np.inf) if lower is None else np.asarray(lower, float)
    hi = np.full(n_p, np.inf) if upper is None else np.asarray(upper, float)
    # bounds shared by the batch stay (P,); per-curve bounds are (B, P)
    lo, hi = (np.broadcast_to(b, (n_b, n_p)) if b.ndim == 2 else np.broadcast_to(b, (n_p,))
              for b in (lo, hi))
    shared_bounds = lo.ndim == 1 and hi.ndim == 1

    def bounds(idx: NDArray) -> tuple[NDArray, NDArray]:
        if shared_bounds:
            return lo, hi
        return np.broadcast_to(lo, (n_b, n_p))[idx], np.broadcast_to(hi, (n_b, n_p))[idx]

    p = np.clip(p, lo, hi)

    def evaluate(pp: NDArray, idx: NDArray, f0: NDArray | None = None
                 ) -> tuple[NDArray, list[NDArray]]:
        if jacobian:
            return predict(pp, idx)  # type: ignore[return-value]
        return _jacobian(predict, pp, idx, *bounds(idx), f0)  # type: ignore[arg-type]

    def wsum(wa: NDArray, r: NDArray) -> NDArray:
        return r * r @ wa if wa.ndim == 1 else np.einsum("bn,bn->b", wa * r, r)

    idx_all = np.arange(n_b)
    f, cols = evaluate(p, idx_all)
    r = y - f
    wrss = wsum(w, r)
    lam = np.full(n_b, lambda0)
    n_iter = np.zeros(n_b, dtype=int)
    converged = np.zeros(n_b, dtype=bool)
    act = np.flatnonzero(np.isfinite(wrss) & np.all(np.isfinite(p), axis=1))
    if act.size < n_b:
        r = r[act]
        cols = [c if c.ndim == 1 else c[act] for c in cols]
    eye = np.eye(n_p)
    for _ in range(max_iter):
        if act.size == 0:
            break
        wa = w if w.ndim == 1 else w[act]
        a, g = normal_equations(cols, wa, r, stacked=not jacobian)
        assert g is not None
        pa = p[act]
        lo_a, hi_a = bounds(act)
        diag = np.einsum("vii->vi", a)
        damp = lam[act, None] * np.maximum(diag, 1e-12 * _rowmax(diag)[:, None] + 1e-300)
        # parameters held at a bound by the gradient leave the step (active set)
        held = ((pa <= lo_a) & (g < 0)) | ((pa >= hi_a) & (g > 0))
        if held.any():
            free = (~held).astype(float)
            a = a * free[:, :, None] * free[:, None, :]
            damp = damp * free + (1.0 - free)
            g = g * free
        mat = a + damp[:, :, None] * eye
        step = _solve(mat, g)
        trial = np.clip(pa + step, lo_a, hi_a)
        if jacobian:
            ft, colt = predict(trial, act)  # type: ignore[misc]
        else:
            ft, colt = predict(trial, act), []  # type: ignore[assignment]
        rt = y[act] - ft
        wrss_t = wsum(wa, rt)
        old = wrss[act]
        better = np.isfinite(wrss_t) & (wrss_t <= old)
        n_iter[act] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = _rowmax(np.abs(trial - pa) / np.maximum(np.abs(pa), 1e-8))
            rel = (old - wrss_t) / np.maximum(old, 1e-300)
            sg = _rowmax(np.abs(g) * np.maximum(np.abs(pa), 1e-3)) / old
        done = (better & ((rel < ftol) | (dx < xtol))) | (sg < gtol)
        stuck = ~better & (lam[act] > lambda_max)
        acc = act[better]
        if acc.size:
            p[acc] = trial[better]
            wrss[acc] = wrss_t[better]
        if not jacobian and better.any():
            # forward differences at the accepted points only
            _, cacc = _jacobian(predict, trial[better], acc, *bounds(acc),  # type: ignore[arg-type]
                                ft[better])
            colt = []
            for c, ca in zip(cols, cacc, strict=True):
                cn = c.copy()
                cn[better] = ca
                colt.append(cn)
        elif not jacobian:
            colt = cols
        lam[act] = np.where(better, np.maximum(lam[act] / lambda_down, 1e-12),
                            lam[act] * 10.0)
        stop = done | stuck
        converged[act[stop]] = True
        keep = ~stop
        r = np.where(better[:, None], rt, r)[keep]
        cols = [c if c.ndim == 1 else np.where(better[:, None], ct, c)[keep]
                for c, ct in zip(cols, colt, strict=True)]
        act = act[keep]
    fitted = cov = None
    if final:
        fitted, cols = evaluate(p, idx_all)
        wrss = wsum(w, y - fitted)
        n_used = np.sum(np.broadcast_to(w > 0, (n_b, n_n)), axis=-1)
        cov = _covariance(cols, w, wrss, n_used, stacked=not jacobian)
    return LMResult(params=p, fitted=fitted, wrss=wrss, cov=cov, n_iter=n_iter,
                    converged=converged)
