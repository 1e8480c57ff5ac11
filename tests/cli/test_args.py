"""Option values are checked before a command loads anything: one line, exit status 2."""

import argparse
import subprocess
import sys

import pytest

from fluoseg.cli import _args, main


def test_diameter_and_tta_values():
    assert _args.diameter("auto") == "auto"
    assert _args.diameter("12") == 12.0 and _args.diameter("6.5um") == "6.5um"
    for bad in ("-3", "big", "0um", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="--diameter"):
            _args.diameter(bad)
    assert _args.tta("all") is True and _args.tta("0,4") == [0, 4]
    for bad in ("x", "8", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="--tta"):
            _args.tta(bad)


def test_marker_choices_with_aliases():
    assert _args.marker_choice("DNA") == [("DNA", "DNA")]
    assert _args.marker_choice("DNA=DAPI, CD31") == [("DNA", "DAPI"), ("CD31", "CD31")]
    for bad in ("=DAPI", "DNA=", " , "):
        with pytest.raises(argparse.ArgumentTypeError):
            _args.marker_choice(bad)


def test_numbers_and_names():
    assert _args.positive_int("3") == 3 and _args.tile_size("64") == 64
    assert _args.names(" a, b ,") == ["a", "b"] and _args.integers("1,10") == [1, 10]
    for parse, bad in ((_args.positive_int, "0"), (_args.positive_int, "x"), (_args.tile_size, "4"),
                       (_args.names, " , "), (_args.integers, "1,ten"), (_args.integers, "0")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


@pytest.mark.parametrize("argv", [
    ["predict", "run", "img.tif", "--out", "o", "--tta", "foo"],
    ["predict", "run", "img.tif", "--out", "o", "--tile-size", "-5"],
    ["predict", "run", "img.tif", "--out", "o", "--batch-size", "0"],
    ["predict", "run", "img.tif", "--out", "o", "--precision", "fp8"],
    ["crossval", "a.yaml", "--folds", "2", "--out", "o", "--train-sizes", "1,ten"],
    ["train", "c.yaml", "--out", "o", "--epochs", "0"],
    ["experiment", "crossval", "c.yaml", "--out", "o", "--folds", "zero"],
    ["nonsense"],
])
def test_bad_values_are_one_line_errors_before_anything_loads(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "error:" in error
    assert not (tmp_path / "o").exists()


def test_version_and_help_texts():
    result = subprocess.run([sys.executable, "-m", "fluoseg", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("fluoseg ")
    from fluoseg.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    checked = 0
    for parser in parsers(build_parser()):
        for option in parser._actions:
            if option.dest not in ("help", "version") and not isinstance(option, argparse._SubParsersAction):
                assert option.help, f"{parser.prog} {option.dest} has no help text"
                checked += 1
    assert checked > 80  # every command and subcommand was visited
