import numpy as np
import pytest

from petbind.errors import ConfigError
from petbind.pvc.psf import FWHM_PER_SIGMA, PSF, resolve_psf


def test_config_wins_and_scalar_is_isotropic():
    psf = resolve_psf(2.8, {"ReconFilterType": "Gaussian", "ReconFilterSize": 5.0})
    assert psf.fwhm_mm == (2.8, 2.8, 2.8) and psf.source == "config"
    assert resolve_psf([2.0, 3.0, 4.0]).fwhm_mm == (2.0, 3.0, 4.0)


def test_sidecar_filter_and_scanner_resolution_add_in_quadrature():
    side = {"ReconFilterType": "Gaussian", "ReconFilterSize": 3.0, "ScannerResolutionFWHM": 4.0}
    psf = resolve_psf(None, side)
    assert psf.fwhm_mm == pytest.approx((5.0, 5.0, 5.0))
    assert "ReconFilterSize" in psf.source and "ScannerResolutionFWHM" in psf.source
    assert resolve_psf(None, {"ReconFilterType": "Gaussian", "ReconFilterSize": 2.8}
                       ).fwhm_mm == (2.8, 2.8, 2.8)


def test_missing_psf_names_the_field():
    with pytest.raises(ConfigError) as e:
        resolve_psf(None, {"ReconFilterType": "none", "ReconFilterSize": 0},
                    sidecar_path="x_pet.json", config_field="--fwhm-mm")
    assert e.value.field == "--fwhm-mm" and "ReconFilterSize" in str(e.value)


@pytest.mark.parametrize("bad", [[1.0, 2.0], "2.8", -1.0, True, 99.0])
def test_bad_fwhm_rejected(bad):
    with pytest.raises(ConfigError):
        resolve_psf(bad)


def test_sigma_in_voxels_of_an_anisotropic_grid():
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    s = PSF((4.0, 4.0, 6.0)).sigma_voxels(aff)
    np.testing.assert_allclose(s, [2.0 / FWHM_PER_SIGMA] * 3)
