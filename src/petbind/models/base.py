"""Model / Fit base classes and the validity rule shared by every kinetic model.

A model holds what does not depend on the target curves (frame timing, the
input curve, settings, precomputed bases); ``Model.fit(tacs, weights=None)``
fits a batch of curves shaped ``(..., n_frames)`` and returns a :class:`Fit`
whose parameter arrays have the batch shape (dipy's ``reconst`` pattern).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from petbind.errors import DataError, ModelError
from petbind.lazy import lazy_module
from petbind.timing import FrameTiming

pd = lazy_module("pandas")  # imported on first use: `petbind --help` needs no pandas

#: Why a fit is invalid (the ``invalid_reason`` column), by code; 0 = valid. The
#: rules are judged in this order and the first that applies is the reason.
REASONS = ("", "unusable curve", "no residual degree of freedom", "parameter at bound",
           "fit failed", "poor fit: R2 not finite", "poor fit: R2 < 0")
VALID, UNUSABLE, NO_DOF, AT_BOUND, FAILED, GOF_NONFINITE, GOF_NEGATIVE = range(len(REASONS))


def judge(usable: NDArray, solved: NDArray, n_used: NDArray | int, n_params: int,
          bound: dict[str, NDArray] | None = None
          ) -> tuple[NDArray[np.bool_], NDArray[np.uint8], NDArray[np.uint16], tuple[str, ...]]:
    """The validity rule shared by every model family, judged once per curve.

    A fit is valid only if the curve is usable (finite, with signal), it
    leaves at least one residual degree of freedom (``n_used - n_params >= 1``),
    no parameter sits on a bound of its search box, and the solver produced
    finite parameters the model accepts (``solved``). The goodness-of-fit rule
    (a finite R^2, and R^2 >= 0 for models that fit a curve) needs the fitted
    curves and is judged lazily by :attr:`Fit.invalid_reason`.

    Parameters
    ----------
    usable, solved : ndarray of bool, shape (B,)
    n_used : ndarray or int
        Frames with positive weight per curve (or one number for all).
    n_params : int
        Fitted parameters (a fitted delay counts).
    bound : dict of str -> ndarray of bool, optional
        Per parameter, where it sits on a bound.

    Returns
    -------
    valid : ndarray of bool (B,)
    reason : ndarray of uint8 (B,)
        Index into :data:`REASONS`.
    bound_mask : ndarray of uint16 (B,)
        Bit i set where parameter ``bound_names[i]`` is on a bound.
    bound_names : tuple of str
    """
    usable = np.asarray(usable, dtype=bool)
    solved = np.asarray(solved, dtype=bool)
    shape = usable.shape
    names = tuple(bound or ())
    mask = np.zeros(shape, dtype=np.uint16)
    on_bound = np.zeros(shape, dtype=bool)
    for i, name in enumerate(names):
        hit = np.broadcast_to(np.asarray(bound[name], dtype=bool), shape)  # type: ignore[index]
        if hit.any():  # cheap when nothing is on a bound (the usual voxel map)
            mask[hit] |= np.uint16(1 << i)
            on_bound |= hit
    dof_ok = np.asarray(n_used) - n_params >= 1
    valid = usable & solved & ~on_bound & dof_ok
    reason = np.zeros(shape, dtype=np.uint8)
    if not valid.all():
        # later rules overwrite earlier ones: the first in REASONS order wins
        reason[~solved] = FAILED
        reason[on_bound] = AT_BOUND
        reason[np.broadcast_to(~dof_ok, shape)] = NO_DOF
        reason[~usable] = UNUSABLE
    return valid, reason, mask, names


def at_bounds(params: NDArray, names: tuple[str, ...], lower: Any, upper: Any,
              rtol: float = 1e-6) -> dict[str, NDArray[np.bool_]]:
    """Where each parameter of ``params`` (B, P) sits on its box bound.

    Upper bounds and positive lower bounds are search-box limits; a lower
    bound of 0 is the physical limit of a rate or a volume fraction and is
    not flagged.
    """
    lo = np.broadcast_to(np.asarray(lower, dtype=float), params.shape[-1:])
    hi = np.broadcast_to(np.asarray(upper, dtype=float), params.shape[-1:])
    out = {}
    with np.errstate(invalid="ignore"):
        for i, name in enumerate(names):
            p = params[..., i]
            hit = np.zeros(p.shape, dtype=bool)
            if np.isfinite(hi[i]):
                hit |= p >= hi[i] - rtol * max(abs(hi[i]), 1.0)
            if np.isfinite(lo[i]) and lo[i] > 0:
                hit |= p <= lo[i] * (1 + rtol) + 1e-300
            out[name] = hit
    return out


class Params(MutableMapping):
    """A fit's parameters: the ones its model solved for, and the derived ones on access.

    The model's code stores only what it solves for (:attr:`stored`); each
    :class:`~petbind.models.catalogue.Derived` of the model's catalogue entry
    (DVR = BP_ND + 1, k2' = k2 / R1, V_T = K1 / k2, ...) is computed from
    them when read, NaN wherever one of its inputs is NaN (an invalid fit). So
    every output (``Fit.to_frame``, parametric maps, sidecars) reads the same
    names as before, and each number has one source. A stored value of a
    derived name wins (:func:`petbind.models.plasma.add_binding`'s
    ``bp_nd = V_T / V_ND - 1``). Iteration order: stored names, then derived.

    Parameters
    ----------
    stored : dict of str -> ndarray
        Fitted parameters, batch-shaped.
    model : str
        Model name; its derived rules are looked up in the registry on access
        (only the name is kept, so a fit pickles).
    settings : mapping
        The fit's settings (a fixed k2' is one).
    """

    def __init__(self, stored: Mapping[str, Any], model: str = "",
                 settings: Mapping[str, Any] | None = None) -> None:
        self.stored: dict[str, Any] = dict(stored)
        self.model = model
        self.settings: Mapping[str, Any] = settings if settings is not None else {}

    def _rules(self) -> dict[str, Any]:
        from petbind.models.registry import derived_rules

        out: dict[str, Any] = {}
        for rule in derived_rules(self.model):
            if rule.name not in self.stored and all(n in self.stored or n in out
                                                    for n in rule.inputs):
                out[rule.name] = rule
        return out

    @property
    def derived(self) -> tuple[str, ...]:
        """Names computed on access (not stored)."""
        return tuple(self._rules())

    def __getitem__(self, name: str) -> Any:
        if name in self.stored:
            return self.stored[name]
        rule = self._rules().get(name)
        if rule is None:
            raise KeyError(name)
        ins = [np.asarray(self[n], dtype=float) for n in rule.inputs]
        shape = np.broadcast_shapes(*(a.shape for a in ins)) if ins else ()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = np.asarray(rule.func({n: a for n, a in zip(rule.inputs, ins, strict=True)},
                                         self.settings), dtype=float)
            bad = np.zeros(shape, dtype=bool)
            for a in ins:
                bad |= np.isnan(a)
            return np.where(bad, np.nan, value)

    def __setitem__(self, name: str, value: Any) -> None:
        self.stored[name] = value

    def __delitem__(self, name: str) -> None:
        del self.stored[name]

    def __contains__(self, name: object) -> bool:
        return name in self.stored or name in self._rules()

    def __iter__(self) -> Iterator[str]:
        yield from self.stored
        yield from self._rules()

    def __len__(self) -> int:
        return len(self.stored) + len(self._rules())

    def __repr__(self) -> str:
        return f"Params(stored={list(self.stored)}, derived={list(self.derived)})"


@dataclass
class Fit:
    """The result of fitting a model to a batch of curves.

    Attributes
    ----------
    model : str
        Model name, e.g. ``"srtm"``.
    timing : FrameTiming
        Frames of the fitted curves.
    params : Params (a mapping str -> ndarray)
        Named parameters, each shaped like the batch (uniform names across
        models: ``bp_nd``, ``r1``, ``k2``, ``k2prime``, ``dvr``, ``vt``, ...):
        those the model solved for and, computed on access, those derived from
        them by the model's catalogue entry (:class:`Params`). A dict given
        here is wrapped.
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
    reason : ndarray of uint8, batch shape, optional
        Why each fit is invalid, as an index into :data:`REASONS` (from
        :func:`judge`); default: ``"fit failed"`` where ``valid`` is False.
    bound_mask : ndarray of uint16, batch shape, optional
        Parameters on a bound (bit i = ``bound_names[i]``).
    bound_names : tuple of str
    """

    model: str
    timing: FrameTiming
    params: Params
    data: NDArray
    fitted: NDArray
    weights: NDArray
    valid: NDArray[np.bool_]
    n_params: int
    se: dict[str, NDArray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    reason: NDArray[np.uint8] | None = None
    bound_mask: NDArray[np.uint16] | None = None
    bound_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if callable(self.fitted):
            # computed on first access (a voxel map that reads only parameters never pays)
            self.__dict__["_fitted_fn"] = self.__dict__.pop("fitted")
        stored = self.params.stored if isinstance(self.params, Params) else self.params
        self.params = Params(stored, self.model, self.settings)
        valid = np.asarray(self.valid, dtype=bool)
        if self.reason is None:
            self.reason = np.where(valid, VALID, FAILED).astype(np.uint8)
        if self.bound_mask is None:
            self.bound_mask = np.zeros(valid.shape, dtype=np.uint16)

    @property
    def bound(self) -> NDArray:
        """Names of the parameters on a bound, comma-separated (``""`` for none), per curve."""
        mask = np.asarray(self.bound_mask)
        out = np.full(mask.shape, "", dtype=object)
        for i, name in enumerate(self.bound_names):
            hit = (mask >> np.uint16(i)) & np.uint16(1) > 0
            out[hit] = [f"{a},{name}" if a else name for a in out[hit]]
        return out

    @property
    def invalid_reason(self) -> NDArray:
        """Why each fit is invalid (``""`` where valid), goodness of fit included.

        The rules of :func:`judge`, then for fits valid so far: R^2 must be
        finite and, for models that fit a curve (``ModelSpec.gof_rule``; not
        the ratio nor the graphical methods, whose ``fitted`` is only implied
        by a line), at least 0 - a fit worse than the curve's own mean is not
        a fit. Computing it evaluates ``fitted``.
        """
        from petbind.models.catalogue import gof_rule

        code = np.asarray(self.reason).copy()
        ok = code == VALID
        if ok.any():
            r2 = np.asarray(self.r2)
            code[ok & ~np.isfinite(r2)] = GOF_NONFINITE
            if gof_rule(self.model):
                with np.errstate(invalid="ignore"):
                    code[ok & np.isfinite(r2) & (r2 < 0)] = GOF_NEGATIVE
        names = np.asarray(REASONS, dtype=object)[code]
        bound = self.bound
        at = code == AT_BOUND
        names[at] = [f"{REASONS[AT_BOUND]}: {b}" for b in bound[at]]
        return names

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

        ``valid`` is the full rule (:attr:`invalid_reason` is ``""``), so a
        fit failing the goodness-of-fit rule is invalid here with NaN
        parameters; ``bound`` names the parameters on a bound and
        ``invalid_reason`` says why a row is invalid.
        """
        n = int(np.prod(self.shape)) if self.shape else 1
        reason = np.asarray(self.invalid_reason).reshape(n)
        valid = reason == ""
        cols: dict[str, Any] = {}
        if names is not None:
            cols["region"] = list(names)
        cols["model"] = [self.model] * n
        keys = sorted(self.params, key=lambda k: k != "bp_nd")  # bp_nd first, order kept
        for k in keys:
            cols[k] = np.where(valid, np.broadcast_to(self.params[k], self.shape).reshape(n),
                               np.nan)
        for k, v in self.se.items():
            cols[f"{k}_se"] = np.where(valid, np.broadcast_to(v, self.shape).reshape(n), np.nan)
        cols["aic"] = np.asarray(self.aic).reshape(n)
        cols["r2"] = np.asarray(self.r2).reshape(n)
        cols["n_frames_used"] = np.asarray(self.n_used).reshape(n)
        cols["valid"] = valid
        cols["bound"] = np.asarray(self.bound).reshape(n)
        cols["invalid_reason"] = reason
        return pd.DataFrame(cols)


class CurveShapeError(DataError, ModelError):
    """Curves whose last axis does not match the frames: the one error every model raises.

    A :class:`~petbind.errors.DataError` (the data do not fit the timing) and a
    :class:`~petbind.errors.ModelError` (what the plasma models raised before the
    families shared their checks), so a handler of either catches it.
    """


class Model:
    """Base of every kinetic model, reference-tissue and plasma-input alike.

    A model is configured once (timing, input curve, settings; dipy's
    ``ReconstModel`` pattern) and its ``fit(tacs, weights=None)`` fits a batch
    shaped ``(..., n_frames)``. What every family does the same way lives
    here, written once: the check of the curves' shape (:meth:`_curves`, one
    :class:`CurveShapeError` for curves that do not match the frames, in every
    model) and the assembly of the :class:`Fit`
    (:meth:`_assemble`: the validity rule of :func:`judge`, invalid parameters
    set to NaN, arrays reshaped to the batch). Families implement the solve.
    """

    name: ClassVar[str] = ""
    timing: FrameTiming

    def _curves(self, tacs: ArrayLike, *, keep_float32: bool = False) -> NDArray:
        """``tacs`` as an array whose last axis matches the frames (float64, or float32 kept).

        Raises
        ------
        CurveShapeError
            When the last axis is not ``n_frames`` long.
        """
        y = np.asarray(tacs)
        if not (keep_float32 and y.dtype == np.float32):
            y = y.astype(np.float64, copy=False)
        n = self.timing.n_frames
        if y.ndim == 0 or y.shape[-1] != n:
            got = y.shape[-1] if y.ndim else 0
            raise CurveShapeError(f"curves have {got} frames, timing has {n} (shape "
                                  f"{y.shape}, expected (..., {n}))", field="tacs",
                                  fix="give one value per frame on the last axis")
        return y

    def _assemble(self, *, batch: tuple[int, ...], params: dict[str, NDArray],
                  se: dict[str, NDArray], data: NDArray, fitted: Any, weights: NDArray,
                  usable: NDArray, solved: NDArray, n_used: NDArray | int, n_params: int,
                  bound: dict[str, NDArray] | None = None,
                  settings: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None,
                  judged: tuple[NDArray, NDArray, NDArray, tuple[str, ...]] | None = None
                  ) -> Fit:
        """The :class:`Fit` of a solved batch (flat arrays (B,) in, batch shape out).

        Judges validity (:func:`judge`), sets the parameters and standard
        errors of invalid curves to NaN (in place where the arrays allow it:
        a voxel map's parameter arrays are not copied) and reshapes them.
        ``fitted`` may be an array or a callable evaluated on first access.
        ``judged``: the result of :func:`judge` on these arguments when the
        caller needed it already (not judged twice).
        """
        valid, reason, bmask, bnames = judged if judged is not None else \
            judge(usable, solved, n_used, n_params, bound)
        bad = ~valid
        any_bad = bool(bad.any())
        for d in (params, se):
            for k, v in d.items():
                v = np.asarray(v, dtype=np.float64)
                if any_bad:
                    if not v.flags.writeable:
                        v = v.copy()
                    v[bad] = np.nan
                d[k] = v.reshape(batch)
        return Fit(model=self.name, timing=self.timing, params=params, data=data,
                   fitted=fitted, weights=weights, valid=valid.reshape(batch),
                   n_params=n_params, se=se, settings=dict(settings or {}),
                   extra=dict(extra or {}), reason=reason.reshape(batch),
                   bound_mask=bmask.reshape(batch), bound_names=bnames)
