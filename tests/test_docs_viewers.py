"""docs/viewers.md: every fluoseg command on the page parses, and its screenshot exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fluoseg.cli.main import build_parser

PAGE = Path(__file__).resolve().parents[1] / "docs" / "viewers.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("fluoseg ")]


@pytest.mark.parametrize("command", _commands())
def test_documented_commands_parse(command):
    arguments = shlex.split(command.split("  #")[0])[1:]
    parsed = build_parser().parse_args(arguments)
    assert parsed.command in ("export", "predict")


def test_page_documents_every_output_format_and_its_images_exist():
    from fluoseg.predict import OUTPUT_FORMATS

    text = PAGE.read_text(encoding="utf-8")
    assert len(_commands()) >= 5
    assert all(f"`{fmt}`" in text for fmt in OUTPUT_FORMATS if fmt not in ("tif", "zarr"))
    for image in re.findall(r"\]\((images/[^)]+)\)", text):
        assert (PAGE.parent / image).is_file(), image
