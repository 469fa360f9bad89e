"""Plasma-input kinetic models: compartment models and graphical methods.

All models take the arterial input as a :class:`petbind.blood.InputFunction`
(metabolite-corrected plasma ``C_P`` and whole blood ``C_B``, continuous and
piecewise linear) and fit a batch of tissue curves shaped ``(..., n_frames)``
(kBq/mL, decay-corrected to injection; times in minutes) in one call.

Compartment models (non-linear, batched Levenberg-Marquardt from
:mod:`petbind.numerics.optimize`, started from a basis-function grid):

``1tcm``
    ``C_T = K1 C_P * exp(-k2 t)``; ``V_T = K1 / k2``.
``2tcm``
    Reversible two-tissue model. Its impulse response is
    ``phi1 exp(-alpha1 t) + phi2 exp(-alpha2 t)`` with
    ``alpha1,2 = (k2 + k3 + k4 -/+ sqrt((k2 + k3 + k4)^2 - 4 k2 k4)) / 2``,
    ``phi1 = K1 (k3 + k4 - alpha1) / (alpha2 - alpha1)``,
    ``phi2 = K1 (alpha2 - k3 - k4) / (alpha2 - alpha1)``;
    ``V_T = K1 / k2 (1 + k3 / k4)``, ``BP_ND = k3 / k4``.
``2tcm-irr``
    ``k4 = 0``: response ``K1 / (k2 + k3) (k3 + k2 exp(-(k2 + k3) t))``;
    ``K_i = K1 k3 / (k2 + k3)``.

The measured curve is ``C_PET = (1 - v_B) C_T + v_B C_B`` (v_B fitted or
fixed). Each convolution is the exact frame average of the piecewise-linear
input convolved with an exponential
(:meth:`PiecewiseLinear.exp_conv_frame_means`), so the model is exact over
frames. An optional input delay is fitted per curve (:func:`petbind.models.delay.fit_delay`),
checked against its neighbours with the full model, and then held fixed.

Graphical methods (linear, fit voxels as easily as regions; ``t*`` given or
chosen by the max-error rule):

``logan-plasma``
    ``int C_T / C_T = V_T int C_P / C_T + b`` for ``t > t*`` (Logan et al. 1990).
``patlak``
    ``C_T / C_P = K_i int C_P / C_P + V_0`` for ``t > t*`` (Patlak et al. 1983).
``ma1``
    ``C_T = -(V_T / b) int C_P + (1 / b) int C_T`` for ``t > t*`` (Ichise et al. 2002).

Every relation is averaged over each frame: the plasma terms exactly (from
the piecewise-linear input) and the tissue running integral from the
mean-preserving continuous form of the frame data
(:func:`petbind.numerics.convolution.running_integral_frame_means`).
The input delay and v_B are given, or (``"fit"``) taken per curve from the
early-frame 1TCM + v_B pre-fit of :func:`petbind.models.delay.fit_delay`.

References
----------
Innis RB, Cunningham VJ, Delforge J, et al. Consensus nomenclature for in
vivo imaging of reversibly binding radioligands. J Cereb Blood Flow Metab
2007;27:1533-1539.
Gunn RN, Gunn SR, Cunningham VJ. Positron emission tomography compartmental
models. J Cereb Blood Flow Metab 2001;21:635-652.
Logan J, Fowler JS, Volkow ND, et al. Graphical analysis of reversible
radioligand binding from time-activity measurements applied to
[N-11C-methyl]-(-)-cocaine PET studies in human subjects. J Cereb Blood Flow
Metab 1990;10:740-747.
Patlak CS, Blasberg RG, Fenstermacher JD. Graphical evaluation of
blood-to-brain transfer constants from multiple-time uptake data. J Cereb
Blood Flow Metab 1983;3:1-7.
Ichise M, Toyama H, Innis RB, Carson RE. Strategies to improve neuroreceptor
parameter estimation by linear regression analysis. J Cereb Blood Flow Metab
2002;22:1271-1281.
Akaike H. A new look at the statistical model identification. IEEE Trans
Automat Control 1974;19:716-723.
"""

from __future__ import annotations

from petbind.models.plasma.common import plasma_frame_terms
from petbind.models.plasma.compartment import OneTCM, TwoTCM, TwoTCMIrreversible
from petbind.models.plasma.graphical import MA1, LoganPlasma, Patlak
from petbind.models.plasma.outcomes import add_binding, compare_fits

__all__ = [
    "MA1",
    "LoganPlasma",
    "OneTCM",
    "Patlak",
    "TwoTCM",
    "TwoTCMIrreversible",
    "add_binding",
    "compare_fits",
    "plasma_frame_terms",
]
