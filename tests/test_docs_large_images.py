"""docs/large_images.md: every fluoseg command on the page parses, and the options it names exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fluoseg.cli.main import build_parser

PAGE = Path(__file__).resolve().parents[1] / "docs" / "large_images.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("fluoseg ")]


@pytest.mark.parametrize("command", _commands())
def test_documented_commands_parse(command):
    parsed = build_parser().parse_args(shlex.split(command, comments=True)[1:])
    if parsed.command == "train":
        assert parsed.nproc > 1
    else:
        assert parsed.command == "predict" and parsed.format in ("zarr", "ngff")


def test_page_covers_blocks_resume_and_dask():
    commands = " ".join(_commands())
    assert len(_commands()) >= 6
    for option in ("--block-size", "--halo", "--resume", "--workers", "--scheduler", "--format ngff",
                   "--block-depth"):
        assert option in commands, option
    assert "dask_jobqueue" in PAGE.read_text(encoding="utf-8")
