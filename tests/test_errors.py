"""FluosegError prints as one line whatever the user's text holds (fluoseg.errors)."""

from __future__ import annotations

from pathlib import Path

from fluoseg.errors import FluosegError, one_line


def test_message_and_path_are_joined():
    error = FluosegError("file not found; check the path", Path("a/b.tif"))
    assert str(error) == "a/b.tif: file not found; check the path"
    assert error.path == Path("a/b.tif") and error.message == "file not found; check the path"
    assert str(FluosegError("no path")) == "no path"


def test_line_breaks_in_user_text_are_escaped():
    error = FluosegError("unknown key 'a\nb'; remove it", "dir\nname/x\t.yaml")
    assert str(error) == "dir\\nname/x\\t.yaml: unknown key 'a\\nb'; remove it"
    assert error.path == Path("dir\nname/x\t.yaml")  # the real path is kept for callers


def test_one_line_escapes_unprintables_only():
    assert one_line("µm, DAPI 1") == "µm, DAPI 1"
    assert one_line("a\r\nb\x00c\u2028d") == "a\\r\\nb\\x00c\\u2028d"
