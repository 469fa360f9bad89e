"""Spatial transforms on disk: ITK transform files (``.tfm``, ``.txt``, ``.mat``, ``.h5``).

Written by :func:`petbind.preprocess.register.save_transform` (atomically),
ANTs or other ITK tools; read here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from petbind.errors import FileFormatError


def read_transform(path: str | os.PathLike) -> Any:
    """An ITK transform file as a ``SimpleITK.Transform`` (composites as ``CompositeTransform``).

    Raises
    ------
    FileFormatError
        The file is missing or not an ITK transform (field ``transform``).
    """
    import SimpleITK as sitk

    p = Path(path)
    if not p.is_file():
        raise FileFormatError("transform file not found", path=p, field="transform",
                              fix="run `petbind preprocess` first or give the right path")
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as exc:
        raise FileFormatError(f"cannot read ITK transform ({str(exc).splitlines()[-1]})",
                              path=p, field="transform",
                              fix="give an ITK .tfm/.txt/.mat/.h5 transform") from exc
    # Composite transforms read back as a CompositeTransform wrapped in Transform.
    if tx.GetName() == "CompositeTransform":
        return sitk.CompositeTransform(tx)
    return tx
