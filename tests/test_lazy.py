"""petbind.lazy: modules imported on first use; libraries imported without optional extras."""

from __future__ import annotations

import subprocess
import sys

from petbind.lazy import lazy_module


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_lazy_module_imports_on_first_attribute():
    out = _run("import sys; from petbind.lazy import lazy_module\n"
               "m = lazy_module('fractions'); a = 'fractions' in sys.modules\n"
               "x = m.Fraction(1, 3); print(a, 'fractions' in sys.modules, x)")
    assert out == "False True 1/3"
    assert lazy_module("math").sqrt(4.0) == 2.0


def test_reading_images_does_not_import_pydicom_and_pydicom_still_imports_later():
    out = _run("import sys, petbind.io.bids, nibabel\n"
               "a = 'pydicom' in sys.modules\n"
               "import pydicom; print(a, pydicom.Dataset.__name__)")
    assert out == "False Dataset"


def test_import_without_leaves_an_already_imported_package_alone():
    out = _run("import sys, json; from petbind.lazy import import_without\n"
               "m = import_without('xml.dom.minidom', 'json')\n"
               "print(m.__name__, sys.modules['json'] is json)")
    assert out == "xml.dom.minidom True"
