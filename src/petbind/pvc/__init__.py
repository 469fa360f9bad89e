"""Partial-volume correction (PVC): GTM, symmetric GTM, RBV, iterative Yang, Müller-Gärtner.

See docs/pvc.md. The building blocks: :mod:`petbind.pvc.psf` (the PSF and
where it comes from), :mod:`petbind.pvc.spread` (region weights and
region-spread functions, once per atlas), :mod:`petbind.pvc.gtm` (region
level), :mod:`petbind.pvc.voxel` (voxel level) and :mod:`petbind.pvc.scan`
(one scan, any method).
"""

from petbind.pvc.gtm import GTMResult, gtm, transfer_matrix
from petbind.pvc.psf import PSF, resolve_psf
from petbind.pvc.scan import METHODS, VOXEL_METHODS, PvcResult, correct_image
from petbind.pvc.spread import BACKGROUND, RegionSpread, region_spread
from petbind.pvc.voxel import iterative_yang, muller_gartner, rbv

__all__ = [
           "BACKGROUND",
           "METHODS",
           "PSF",
           "VOXEL_METHODS",
           "GTMResult",
           "PvcResult",
           "RegionSpread",
           "correct_image",
           "gtm",
           "iterative_yang",
           "muller_gartner",
           "rbv",
           "region_spread",
           "resolve_psf",
           "transfer_matrix",
]
