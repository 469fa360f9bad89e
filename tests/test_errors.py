"""Tests for petbind.errors: messages name file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from petbind import errors
from petbind.errors import PetbindError


def test_message_names_file_field_and_fix():
    e = errors.TimingError("frame 3 overlaps frame 4", path=Path("/d/a_pet.json"),
                           field="FrameDuration", fix="check durations")
    assert str(e) == ("/d/a_pet.json, field 'FrameDuration': frame 3 overlaps frame 4 "
                      "(fix: check durations)")
    assert e.path == "/d/a_pet.json" and e.field == "FrameDuration"


def test_message_without_location_is_the_message():
    assert str(PetbindError("bad")) == "bad"
    assert str(PetbindError("bad", fix="do x")) == "bad (fix: do x)"
    assert str(PetbindError("bad", field="Units")) == "field 'Units': bad"


@pytest.mark.parametrize("name", ["TimingError", "DecayError", "UnitsError", "IsotopeError",
                                  "MetadataError", "FileFormatError", "DataError",
                                  "ConfigError", "ModelError"])
def test_every_documented_subclass_is_a_petbind_error(name):
    cls = getattr(errors, name)
    assert issubclass(cls, PetbindError)
    with pytest.raises(PetbindError):
        raise cls("x", path="p", field="f", fix="y")


def test_location_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        PetbindError("msg", "path")  # type: ignore[misc]
