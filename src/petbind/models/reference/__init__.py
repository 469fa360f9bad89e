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

Layout: one file per model family (``srtm.py``, ``mrtm.py``, ``logan.py``) over
the shared base of ``common.py``; the SUVR ratio is :mod:`petbind.models.ratio`.
A new reference-tissue model is one more file and one catalogue entry
(docs/adding-a-model.md).
"""

from __future__ import annotations

from petbind.models.reference.common import (
    N_BASIS,
    R1_BOUNDS,
    THETA3_BOUNDS,
    ReferenceModel,
    Result,
)
from petbind.models.reference.logan import LoganRef
from petbind.models.reference.mrtm import MRTM, MRTM2
from petbind.models.reference.srtm import BFSRTM, SRTM, SRTM2

__all__ = ["BFSRTM", "MRTM", "MRTM2", "N_BASIS", "R1_BOUNDS", "SRTM", "SRTM2", "THETA3_BOUNDS",
           "LoganRef", "ReferenceModel", "Result"]
