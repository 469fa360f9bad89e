"""No module outside petbind.io opens a file (issue 15, item 4): read from the source with ast.

Every file petbind reads goes through the one reader for its kind in
``petbind.io`` (images, atlases, tables, sidecars, TOML, transforms, bytes,
hashes, package data), so a damaged file gives the same error class and
message wherever it is read. This test finds the calls that open a file
(``open``, ``Path.read_text``, ``nib.load``, ``pd.read_csv``, ``json.load``
...) in every module of ``src/petbind`` and fails on any outside ``io/``
that is not in :data:`ALLOWED` with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_import_graph import _module_name  # one module-name rule for both

import petbind

SRC = Path(petbind.__file__).resolve().parent

#: Module-qualified functions that open a file (``module.function`` as written in the source,
#: after resolving ``import x as y``).
OPENING_FUNCTIONS = {
    "open", "io.open", "codecs.open", "os.open", "gzip.open", "bz2.open", "lzma.open",
    "tarfile.open", "zipfile.ZipFile", "nibabel.load", "nibabel.openers.ImageOpener",
    "numpy.load", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.memmap",
    "pandas.read_csv", "pandas.read_table", "pandas.read_excel", "pandas.read_json",
    "pandas.read_parquet", "json.load", "tomllib.load", "pickle.load", "SimpleITK.ReadImage",
    "SimpleITK.ReadTransform", "pydicom.dcmread", "pydicom.read_file", "PIL.Image.open",
    "petbind.gz.open_read", "shutil.copyfile", "shutil.copy", "shutil.copy2",
}
#: Methods that open the file they are called on (``Path.read_text()`` ...).
OPENING_METHODS = {"read_text", "read_bytes", "open"}

#: ``module -> reason``: the only modules outside petbind.io allowed to open a file.
ALLOWED = {
    # the report's template renderer: jinja2's PackageLoader reads the page's template
    # (no call of the list above; named here because the issue names it)
    "petbind.report.build": "the report's template renderer (jinja2 reads the template)",
    # layer 0, below io/: the gzip codec io/ itself uses (ISA-L when installed)
    "petbind.gz": "the gzip codec of io/'s readers (layer 0, below io/)",
    # layer 1 beside io/ (io imports it): a private, decompressed copy of an image io/
    # opened, for memory mapping; the copy lives in a temporary folder and is removed
    "petbind.image": "a temporary decompressed copy of an image io/ opened, to memory-map it",
    # the run lock: an fcntl lock on a descriptor, not a read of data
    "petbind.study.outdir": "the output folder's run lock (fcntl needs a raw descriptor)",
}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> full dotted name, from every import in the module (lazy ones too)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                    a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _in_memory(call: ast.Call) -> bool:
    """``Image.open(io.BytesIO(data))`` and the like open no file."""
    return bool(call.args) and isinstance(call.args[0], ast.Call) and \
        (_dotted(call.args[0].func) or "").endswith(("BytesIO", "StringIO"))


def file_opens(source: str) -> list[tuple[int, str]]:
    """``(line, call)`` of every call in ``source`` that opens a file."""
    tree = ast.parse(source)
    alias = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _in_memory(node):
            continue
        name = _dotted(node.func)
        if name is not None:
            head, _, rest = name.partition(".")
            full = alias.get(head, head) + (f".{rest}" if rest else "")
            if full in OPENING_FUNCTIONS:
                found.append((node.lineno, full))
                continue
        if isinstance(node.func, ast.Attribute) and node.func.attr in OPENING_METHODS:
            found.append((node.lineno, f".{node.func.attr}()"))
    return found


def opens_outside_io() -> dict[str, list[tuple[int, str]]]:
    """``module -> file opens`` for every module of petbind outside petbind.io."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        if module == "petbind.io" or module.startswith("petbind.io."):
            continue
        hits = file_opens(path.read_text(encoding="utf-8"))
        if hits:
            out[module] = hits
    return out


def test_the_finder_sees_every_way_of_opening_a_file():
    src = '''
import json
import nibabel as nib
import pandas as pd
from pathlib import Path
from PIL import Image
import io

def f(p):
    open(p)
    Path(p).read_text()
    p.read_bytes()
    nib.load(str(p))
    pd.read_csv(p, sep="\\t")
    json.load(p)
    with p.open() as fh:
        pass
    Image.open(p)
    Image.open(io.BytesIO(b""))
    json.loads("{}")

def g(p):
    import SimpleITK as sitk
    from petbind.gz import open_read
    sitk.ReadImage(p)
    open_read(p)
'''
    got = [call for _, call in file_opens(src)]
    assert got.count("open") == 1 and got.count(".open()") == 1
    assert {".read_text()", ".read_bytes()", "nibabel.load", "pandas.read_csv", "json.load",
            "PIL.Image.open", "SimpleITK.ReadImage", "petbind.gz.open_read"} <= set(got)
    assert len(got) == 10  # BytesIO and json.loads open no file


def test_no_module_outside_io_opens_a_file_except_the_allowed_ones():
    found = opens_outside_io()
    unexpected = {m: hits for m, hits in found.items() if m not in ALLOWED}
    assert unexpected == {}, (
        "read these files through petbind.io (or add the module to ALLOWED with its reason): "
        + "; ".join(f"{m}: " + ", ".join(f"line {n} {c}" for n, c in hits)
                    for m, hits in unexpected.items()))


def test_every_allowed_module_exists_and_has_a_reason():
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    for module, reason in ALLOWED.items():
        assert module in modules, module
        assert len(reason) > 20
