"""Fixtures for the I/O tests: the hand-made BIDS-PET generator in tests/data."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest

_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "make_fixtures.py"


def load_fixture_module():
    """Import tests/data/make_fixtures.py once (tests/ is not a package)."""
    name = "petbind_test_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _FIXTURES)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="session")
def fx():
    """The fixture generator module."""
    return load_fixture_module()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime (to prove nothing was written)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def untouched():
    """``with untouched(folder): ...`` fails if any file under ``folder`` appears or changes."""

    @contextlib.contextmanager
    def check(folder: Path):
        before = snapshot(folder)
        yield
        after = snapshot(folder)
        assert after == before, f"files changed: {set(after.items()) ^ set(before.items())}"

    return check
