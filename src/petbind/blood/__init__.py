"""Arterial blood processing: from blood samples to a continuous plasma input.

Everything here works on arrays (times in **minutes** after injection,
activity in **kBq/mL**) that :func:`petbind.io.blood.read_blood` returns; no
file is opened. The chain, each step a function of its own:

1. :func:`check_samples` -- sorted, finite, non-negative samples (fractions in
   [0, 1]); errors name the file and the column.
2. :func:`merge_samples` -- autosampler (early, dense) and manual (late) samples
   into one curve.
3. :func:`decay_correct_samples` -- put blood on the image's decay reference
   (images in petbind are decay-corrected to injection).
4. :func:`correct_dispersion` -- optional, ``C + tau dC/dt`` (Iida et al.
   1986).
5. :class:`PlasmaBloodRatio` -- plasma from whole blood with a constant, linear
   or interpolated plasma/blood ratio.
6. :func:`fit_parent_fraction` -- the unmetabolised (parent) fraction, by
   interpolation or a fitted Hill, bi-exponential or power function, chosen
   by AIC when asked.
7. :func:`build_input_function` -- the metabolite-corrected plasma input and
   the whole-blood curve as :class:`~petbind.numerics.convolution.PiecewiseLinear`
   curves on the samples plus a fine grid (the continuous form the kinetic
   models convolve exactly), with an optional delay
   (:meth:`InputFunction.shifted`; the delay is fitted by
   :func:`petbind.models.delay.fit_delay`, the one-tissue compartment model
   over delays - kinetic fits live in :mod:`petbind.models`, not here).

:func:`input_from_recordings` runs the whole chain on the recordings that
:func:`petbind.io.blood.read_blood` returns (manual and autosampler).

Delay convention: a delay ``d > 0`` means the tracer reaches the brain ``d``
minutes *after* the measured curve shows it, so the input used by the models
is ``C(t - d)``. Arterial samples drawn at the wrist usually lag the brain,
so fitted delays are typically negative (a few seconds).

References
----------
Iida H, Kanno I, Miura S, et al. Error analysis of a quantitative cerebral
blood flow measurement using H2(15)O autoradiography and positron emission
tomography, with respect to the dispersion of the input function. J Cereb
Blood Flow Metab 1986;6:536-545.
Meyer E. Simultaneous correction for tracer arrival delay and dispersion in
CBF measurements by the H215O autoradiographic method and dynamic PET.
J Nucl Med 1989;30:1069-1078.
Tonietto M, Rizzo G, Veronese M, et al. Plasma radiometabolite correction in
dynamic PET studies: insights on the available modeling approaches. J Cereb
Blood Flow Metab 2016;36:326-339 (Hill, exponential and power parent-fraction
models; the same forms as kinfitr's ``metab_hill``, ``metab_exponential``,
``metab_power``).

Layout: ``samples.py`` (steps 1-4), ``metabolites.py`` (5-6), ``input.py``
(7), ``recordings.py`` (the whole chain); the names below are the public
ones, importable from :mod:`petbind.blood` as before.
"""

from __future__ import annotations

from petbind.blood.input import STEP_RAMP_MIN, InputFunction, build_input_function, shift_curve
from petbind.blood.metabolites import (
    PARENT_MODELS,
    ParentFraction,
    PlasmaBloodRatio,
    fit_parent_fraction,
)
from petbind.blood.recordings import input_from_recordings
from petbind.blood.samples import (
    check_samples,
    correct_dispersion,
    decay_correct_samples,
    merge_samples,
)

__all__ = [
    "PARENT_MODELS",
    "STEP_RAMP_MIN",
    "InputFunction",
    "ParentFraction",
    "PlasmaBloodRatio",
    "build_input_function",
    "check_samples",
    "correct_dispersion",
    "decay_correct_samples",
    "fit_parent_fraction",
    "input_from_recordings",
    "merge_samples",
    "shift_curve",
]
