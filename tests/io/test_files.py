"""petbind.io.files: hashes, bytes, pictures and the package's own data files."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from petbind.errors import FileFormatError
from petbind.io.files import package_text, read_bytes, read_picture, sha256_file


def test_sha256_of_a_file_read_in_blocks_equals_hashlib_of_its_bytes(tmp_path):
    p = tmp_path / "x.bin"
    data = bytes(range(256)) * 5000  # several blocks of 1000 bytes
    p.write_bytes(data)
    assert sha256_file(p, chunk=1000) == hashlib.sha256(data).hexdigest()
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_read_bytes_names_a_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="cannot read the QC figure") as e:
        read_bytes(tmp_path / "none.png", what="QC figure")
    assert e.value.path == str(tmp_path / "none.png")


def test_read_picture_returns_rgb_and_closes_the_file(tmp_path):
    from PIL import Image

    p = tmp_path / "a.png"
    Image.new("RGBA", (3, 2), (10, 20, 30, 128)).save(p)
    img = read_picture(p)
    assert img.mode == "RGB" and img.size == (3, 2) and img.getpixel((0, 0)) == (10, 20, 30)


def test_package_text_reads_the_shipped_demo_config():
    text = package_text("data", "demo_study.toml")
    assert "tracers" in tomllib.loads(text)
    import petbind.report

    shipped = Path(petbind.report.__file__).parent / "static" / "report.css"
    assert package_text("static", "report.css", package="petbind.report") == \
        shipped.read_text(encoding="utf-8")
