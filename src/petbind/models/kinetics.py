"""The batched compartment-model engine: tissue kinetics fitted to many curves at once.

One :class:`TissueKinetics` per compartment structure (one tissue, two
tissues reversible, two tissues irreversible) knows its impulse response as a
sum of exponentials and its basis-function start; :meth:`TissueKinetics.fit`
fits ``(1 - v_B) C_T + v_B C_B`` to a batch of curves by a basis-function
grid start and the batched Levenberg-Marquardt solver. The input is either
one curve shared by every row, or a *bank* of inputs with a row -> input
index (``group``): the delay fit (:mod:`petbind.models.delay`) puts the
candidate delays on the batch axis this way, each candidate a shifted copy of
the input, and fits every (curve, delay) pair in one call.

Used by the plasma compartment models (:mod:`petbind.models.plasma`) and by
the delay fit; it imports neither (they both import it).

References
----------
Gunn RN, Gunn SR, Cunningham VJ. Positron emission tomography compartmental
models. J Cereb Blood Flow Metab 2001;21:635-652.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from petbind.numerics.convolution import MIN_RATE, PiecewiseLinear
from petbind.numerics.optimize import LMResult, levenberg_marquardt
from petbind.timing import FrameTiming

__all__ = ["ONE_TISSUE", "TWO_TISSUE", "TWO_TISSUE_IRREVERSIBLE", "TissueKinetics",
           "weighted_lstsq"]

#: Highest blood volume fraction the fits accept.
VB_MAX = 0.9


def weighted_lstsq(x: NDArray, y: NDArray, w: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Batched weighted least squares ``y ~ x @ beta``.

    ``x`` (B, F, P), ``y`` and ``w`` (B, F); rows with zero weight are ignored.
    Returns ``beta`` (B, P), its covariance (B, P, P) (``s^2 (X^T W X)^-1``)
    and the WRSS (B,). Singular systems give NaN.
    """
    x = np.where(w[..., None] > 0, x, 0.0)
    y = np.where(w > 0, y, 0.0)
    xtx = np.einsum("bfp,bf,bfq->bpq", x, w, x)
    xty = np.einsum("bfp,bf,bf->bp", x, w, y)
    n_p = x.shape[-1]
    ok = np.isfinite(xtx).all(axis=(-1, -2)) & np.isfinite(xty).all(axis=-1)
    det = np.where(ok, np.linalg.det(np.where(ok[:, None, None], xtx, np.eye(n_p))), 0.0)
    scale = np.prod(np.diagonal(xtx, axis1=-2, axis2=-1), axis=-1)
    ok &= np.abs(det) > 1e-12 * np.abs(scale)
    safe = np.where(ok[:, None, None], xtx, np.eye(n_p))
    inv = np.linalg.inv(safe)
    beta = np.einsum("bpq,bq->bp", inv, np.where(ok[:, None], xty, 0.0))
    r = y - np.einsum("bfp,bp->bf", x, beta)
    wrss = np.sum(w * r * r, axis=-1)
    dof = np.sum(w > 0, axis=-1) - n_p
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(dof > 0, wrss / dof, np.nan)
    cov = inv * s2[:, None, None]
    beta = np.where(ok[:, None], beta, np.nan)
    cov = np.where(ok[:, None, None], cov, np.nan)
    return beta, cov, np.where(ok, wrss, np.nan)


class TissueKinetics:
    """A compartment structure: impulse response, bounds and basis start (no settings).

    Attributes
    ----------
    kinetic : tuple of str
        Names of the kinetic parameters (``k1`` mL/cm3/min, rates 1/min).
    lower, upper : tuple of float
        Search box of the kinetic parameters.
    grid : ndarray
        Rates (1/min) of the basis-function start.
    """

    kinetic: ClassVar[tuple[str, ...]] = ()
    lower: ClassVar[tuple[float, ...]] = ()
    upper: ClassVar[tuple[float, ...]] = ()
    grid: ClassVar[NDArray] = np.geomspace(0.002, 3.0, 28)

    # -- the structure --------------------------------------------------------
    def exponentials(self, k: NDArray) -> tuple[NDArray, NDArray]:
        """Rates alpha (..., m) and amplitudes phi (..., m) from kinetic params (..., nk)."""
        raise NotImplementedError

    def from_basis(self, rates: NDArray, amps: NDArray) -> NDArray:
        """Kinetic params (..., nk) from grid rates (..., m) and amplitudes (..., m)."""
        raise NotImplementedError

    def basis_pairs(self) -> NDArray:
        """Grid rate combinations (G, m) used for the starting values."""
        raise NotImplementedError

    # -- the engine -----------------------------------------------------------
    def bounds(self, fit_vb: bool) -> tuple[list[float], list[float]]:
        """Lower and upper bounds of the fitted parameters (kinetic, then v_B)."""
        return (list(self.lower) + ([0.0] if fit_vb else []),
                list(self.upper) + ([VB_MAX] if fit_vb else []))

    def predict(self, conv: Callable[[NDArray], NDArray], cb: NDArray, p: NDArray,
                vb: float | None) -> NDArray:
        """Frame means of ``(1 - v_B) C_T + v_B C_B`` for parameters ``p`` (..., n, P).

        ``conv(alpha)``: frame means of the plasma input convolved with
        ``exp(-alpha t)`` for rates (..., n, m) (an
        :class:`~petbind.numerics.convolution.ExpConvPlan`); ``cb``: the
        whole-blood frame means, (F,) or (n, F). ``vb``: None when v_B is the
        last parameter, else its value.
        """
        nk = len(self.kinetic)
        k = p[..., :nk]
        v = p[..., nk] if vb is None else np.full(p.shape[:-1], float(vb))
        alpha, phi = self.exponentials(k)
        tissue = np.sum(phi[..., None] * conv(alpha), axis=-2)
        return (1.0 - v)[..., None] * tissue + v[..., None] * cb

    def start_values(self, plasma: PiecewiseLinear, cb: NDArray, timing: FrameTiming,
                     y: NDArray, w: NDArray, vb: float | None,
                     group: NDArray | None = None) -> tuple[NDArray, NDArray]:
        """Basis-function start: the best admissible grid solution per curve.

        For every rate combination of :meth:`basis_pairs` the model is linear
        in the amplitudes (and v_B) and solved by weighted least squares.

        Parameters
        ----------
        plasma, cb
            One input (values (K,), ``cb`` (F,)) or a bank of D inputs (values
            (D, K), ``cb`` (D, F)) with ``group``.
        y, w : ndarray (B, F)
        vb : float or None
            Fixed v_B, or None to fit it.
        group : ndarray of int (B,), optional
            The input of each row (bank index).

        Returns
        -------
        p0 : ndarray (B, P)
            Start values inside the search box.
        wrss : ndarray (B,)
            Weighted residual sum of squares of the chosen grid solution (inf
            where none is admissible).
        """
        rates = self.basis_pairs()  # (G, m)
        fit_vb = vb is None
        if group is None:
            e = plasma.exp_conv_frame_means(rates, timing)[None]  # (1, G, m, F)
            cbk = np.asarray(cb)[None]
            group = np.zeros(y.shape[0], dtype=int)
        else:
            bank = PiecewiseLinear(plasma.t, plasma.y[:, None, None, :])
            e = bank.exp_conv_frame_means(rates, timing)  # (D, G, m, F)
            cbk = np.asarray(cb)
        _, g, m, n_f = e.shape
        cols = np.moveaxis(e, 2, -1)  # (D, G, F, m)
        if fit_vb:
            cols = np.concatenate([cols, np.broadcast_to(cbk[:, None, :, None],
                                                         cols.shape[:-1] + (1,))], axis=-1)
            target = y
        else:
            target = y - float(vb) * cbk[group]
        n_b = y.shape[0]
        xb = cols[group].reshape(n_b * g, n_f, cols.shape[-1])
        beta, _, wrss = weighted_lstsq(xb, np.repeat(target, g, axis=0), np.repeat(w, g, axis=0))
        beta = beta.reshape(n_b, g, -1)
        wrss = wrss.reshape(n_b, g)
        amps = beta[..., :m]
        v = beta[..., m] if fit_vb else np.full((n_b, g), float(vb))
        ok = np.all(amps >= 0, axis=-1) & np.isfinite(wrss)
        if fit_vb:
            ok &= (v >= 0) & (v < VB_MAX)
        wrss = np.where(ok, wrss, np.inf)
        best = np.argmin(wrss, axis=-1)
        rows = np.arange(n_b)
        found = np.isfinite(wrss[rows, best])
        vb_b = np.where(found, v[rows, best], 0.05)
        amp_b = np.where(found[:, None], amps[rows, best], 0.1)
        k = self.from_basis(rates[best], amp_b / (1.0 - vb_b)[:, None])
        k = np.clip(k, np.asarray(self.lower) * 1.01 + 1e-6, np.asarray(self.upper) * 0.99)
        p0 = np.concatenate([k, vb_b[:, None]], axis=-1) if fit_vb else k
        return p0, wrss[rows, best]

    def fit(self, plasma: PiecewiseLinear, cb: NDArray, timing: FrameTiming, y: NDArray,
            w: NDArray, vb: float | None, *, p0: NDArray | None = None,
            group: NDArray | None = None, max_iter: int = 200, final: bool = True
            ) -> LMResult:
        """Fit curves ``y`` (B, F) with weights ``w`` (B, F): grid start, then LM.

        ``plasma`` / ``cb`` / ``group`` as for :meth:`start_values`; ``p0``
        (all finite) skips the grid start. ``vb``: fixed v_B, or None to fit it.
        """
        fit_vb = vb is None
        plan = plasma.plan(timing)  # the input's part of the convolution, once per fit
        if group is None:
            def predict(p: NDArray, idx: NDArray) -> NDArray:
                return self.predict(plan, cb, p, vb)
        else:
            cbr = np.asarray(cb)[group]

            def predict(p: NDArray, idx: NDArray) -> NDArray:
                rows = group[idx]
                return self.predict(lambda a: plan(a, rows), cbr[idx], p, vb)

        if p0 is None or not np.all(np.isfinite(p0)):
            p0, _ = self.start_values(plasma, cb, timing, y, w, vb, group)
        lo, hi = self.bounds(fit_vb)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return levenberg_marquardt(predict, y, p0, weights=w, lower=lo, upper=hi,
                                       max_iter=max_iter, final=final)


class OneTissue(TissueKinetics):
    """``C_T = K1 C_P * exp(-k2 t)``."""

    kinetic = ("k1", "k2")
    lower = (1e-5, 1e-4)
    upper = (10.0, 10.0)

    def exponentials(self, k: NDArray) -> tuple[NDArray, NDArray]:
        return k[..., 1:2], k[..., 0:1]

    def basis_pairs(self) -> NDArray:
        return self.grid[:, None]

    def from_basis(self, rates: NDArray, amps: NDArray) -> NDArray:
        return np.stack([amps[..., 0], rates[..., 0]], axis=-1)


def _two_tissue_exponentials(k: NDArray) -> tuple[NDArray, NDArray]:
    k1, k2, k3, k4 = (k[..., i] for i in range(4))
    s = k2 + k3 + k4
    disc = np.sqrt(np.maximum(s * s - 4.0 * k2 * k4, 0.0))
    a1 = 0.5 * (s - disc)
    a2 = 0.5 * (s + disc)
    gap = np.maximum(a2 - a1, 1e-12)
    phi1 = k1 * (k3 + k4 - a1) / gap
    phi2 = k1 * (a2 - k3 - k4) / gap
    return np.stack([a1, a2], axis=-1), np.stack([phi1, phi2], axis=-1)


class TwoTissue(TissueKinetics):
    """Reversible two tissues: ``phi1 exp(-alpha1 t) + phi2 exp(-alpha2 t)`` (see plasma)."""

    kinetic = ("k1", "k2", "k3", "k4")
    lower = (1e-5, 1e-4, 0.0, 1e-5)
    upper = (10.0, 10.0, 10.0, 10.0)

    def exponentials(self, k: NDArray) -> tuple[NDArray, NDArray]:
        return _two_tissue_exponentials(k)

    def basis_pairs(self) -> NDArray:
        i, j = np.triu_indices(self.grid.size, 1)
        return np.stack([self.grid[i], self.grid[j]], axis=-1)

    def from_basis(self, rates: NDArray, amps: NDArray) -> NDArray:
        a1, a2 = rates[..., 0], rates[..., 1]
        p1, p2 = amps[..., 0], amps[..., 1]
        k1 = np.maximum(p1 + p2, 1e-5)
        k2 = (p1 * a1 + p2 * a2) / k1
        k4 = a1 * a2 / np.maximum(k2, 1e-6)
        k3 = a1 + a2 - k2 - k4
        return np.stack([k1, k2, k3, k4], axis=-1)


class TwoTissueIrreversible(TissueKinetics):
    """``k4 = 0``: response ``K1 / (k2 + k3) (k3 + k2 exp(-(k2 + k3) t))``."""

    kinetic = ("k1", "k2", "k3")
    lower = (1e-5, 1e-4, 1e-6)
    upper = (10.0, 10.0, 10.0)

    def exponentials(self, k: NDArray) -> tuple[NDArray, NDArray]:
        k1, k2, k3 = k[..., 0], k[..., 1], k[..., 2]
        s = k2 + k3
        alpha = np.stack([np.full(s.shape, MIN_RATE), s], axis=-1)
        phi = np.stack([k1 * k3 / s, k1 * k2 / s], axis=-1)
        return alpha, phi

    def basis_pairs(self) -> NDArray:
        return np.stack([np.full(self.grid.size, MIN_RATE), self.grid], axis=-1)

    def from_basis(self, rates: NDArray, amps: NDArray) -> NDArray:
        a2 = rates[..., 1]
        p1, p2 = amps[..., 0], amps[..., 1]
        k1 = np.maximum(p1 + p2, 1e-5)
        k2 = p2 * a2 / k1
        k3 = a2 - k2
        return np.stack([k1, k2, k3], axis=-1)


ONE_TISSUE = OneTissue()
TWO_TISSUE = TwoTissue()
TWO_TISSUE_IRREVERSIBLE = TwoTissueIrreversible()
