"""The command line prints PetbindError messages verbatim, without a traceback."""

import pytest

from petbind import cli
from petbind.errors import MetadataError


def test_error_text_in_brackets_is_printed_verbatim_and_exit_is_2(monkeypatch, capsys):
    @cli.app.command("_raise_for_test", hidden=True)
    def _raise() -> None:
        raise MetadataError("value [1, 2] is not a number", path="x_pet.json",
                            field="FrameDuration", fix="write [10, 20]")

    with pytest.raises(SystemExit) as exc:
        cli.main(["_raise_for_test"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "x_pet.json" in err and "FrameDuration" in err
    assert "[1, 2]" in err and "write [10, 20]" in err
    assert "Traceback" not in err
